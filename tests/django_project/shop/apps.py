from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self):
        # Record every task of the project: in the web process (enqueues),
        # under run_huey and under hueyscope consume alike.
        from django.conf import settings

        import hueyscope

        hueyscope.attach(settings.HUEY, events=settings.HUEYSCOPE_EVENTS)
