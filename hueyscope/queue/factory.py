"""Settings -> Huey instance.

The embedded default is huey's SQLite storage in WAL mode with a busy
timeout. ``durability`` picks SQLite's synchronous mode: FULL syncs the WAL on
every commit and survives power loss; NORMAL syncs only at checkpoints, which
is several times faster on slow disks and may lose the last commits on power
loss, but never corrupts the file (a killed process loses nothing either way).
huey's own ``fsync`` flag only knows FULL and OFF, hence the small subclass.
"""
import sqlite3

from huey import PriorityRedisHuey

from hueyscope.queue.files import BUSY_TIMEOUT_SECONDS, check_sqlite_file
from hueyscope.queue.postgres import make_postgres_huey
from hueyscope.queue.sqlite import DurableSqliteHuey, SqliteHuey

QUEUE_NAME = "hueyscope"
POSTGRES_SCHEMES = ("postgresql", "postgres")
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


def make_huey(settings, name=QUEUE_NAME, **huey_kwargs):
    """Build the Huey instance the settings describe.

    SQLite queues are leased (at-least-once, :class:`hueyscope.SqliteHuey`)
    unless the settings ask for at-most-once delivery, huey's own behaviour.
    """
    if settings.queue_scheme == "redis":
        return PriorityRedisHuey(name, url=settings.queue, **huey_kwargs)
    if settings.queue_scheme in POSTGRES_SCHEMES:
        return make_postgres_huey(
            name, settings.queue, leased=settings.delivery == "at-least-once",
            **huey_kwargs)
    path = settings.queue_path
    check_sqlite_file(path)
    huey_class = SqliteHuey if settings.delivery == "at-least-once" \
        else DurableSqliteHuey
    return huey_class(
        name,
        filename=path,
        journal_mode="wal",
        timeout=BUSY_TIMEOUT_SECONDS,
        synchronous=SYNCHRONOUS[settings.durability],
        utc=True,
        **huey_kwargs,
    )


def open_queue(huey):
    """Open the queue's storage now, turning failures into one-line ValueErrors.

    huey connects lazily; a command calls this first so an unwritable path or
    a damaged file is reported before any work starts.
    """
    try:
        huey.storage.queue_size()
    except sqlite3.DatabaseError as exc:
        raise ValueError("cannot open queue %s: %s" % (
            getattr(huey.storage, "filename", huey.name), exc))
    except Exception as exc:  # redis.ConnectionError and friends
        raise ValueError("cannot open queue %s: %s" % (huey.name, exc))
