from django.db import models


class Order(models.Model):
    number = models.IntegerField()
    attempt = models.IntegerField(default=1)
