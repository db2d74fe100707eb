"""A test app whose tasks carry the probe corpus (tests/secret_probes.py).

hueyscope's leased SqliteHuey with the recorder attached, on the queue and
store of ``HUEYSCOPE_QUEUE`` and ``HUEYSCOPE_EVENTS``. ``carry`` completes
with whatever it is given; ``leak`` fails for good with an error (and a
cause) quoting credentials, as a client library's errors do.
"""
import os

import hueyscope
from secret_probes import CALLS, CAUSE, ERROR

huey = hueyscope.SqliteHuey("secrets", filename=os.environ["HUEYSCOPE_QUEUE"])
hueyscope.attach(huey, os.environ["HUEYSCOPE_EVENTS"], flush_interval=0.1)


@huey.task()
def carry(*args, **kwargs):
    return len(args) + len(kwargs)


@huey.task(retries=0)
def leak(*args, **kwargs):
    try:
        raise KeyError(CAUSE)
    except KeyError as exc:
        raise ConnectionError(ERROR) from exc


def enqueue_all():
    """Every probe call to both tasks; their ids, printed."""
    ids = []
    for _, args, kwargs in CALLS:
        ids.append(carry(*args, **kwargs).id)
        ids.append(leak(*args, **kwargs).id)
    ids.append(carry("bob-stays-visible", token_count=3).id)
    print(" ".join(ids))
