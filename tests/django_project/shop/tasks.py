"""Tasks of the shop, the djhuey way: ``db_task`` closes stale connections."""
import os
import time
from pathlib import Path

from django.conf import settings
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task, lock_task

from shop.models import Order

MARKERS = Path(settings.BASE_DIR)


@db_task()
def record_order(number):
    """Store an order: one row per task run."""
    return Order.objects.create(number=number).pk


@db_task()
@lock_task("ledger")
def ledger_job(number):
    """Hold the ledger lock until the file ``release`` exists (30 s at most).

    Each attempt leaves a file ``started-N`` first, so a test knows the task
    is running and counts how often it ran.
    """
    attempt = len(list(MARKERS.glob("started-*"))) + 1
    (MARKERS / ("started-%d" % attempt)).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not (MARKERS / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return Order.objects.create(number=number, attempt=attempt).pk


@db_periodic_task(crontab(hour="3", minute="0"))
def nightly_cleanup():
    Order.objects.filter(number__lt=0).delete()
