"""Settings -> Huey instance.

The embedded default is huey's SQLite storage in WAL mode with a busy
timeout. ``durability`` picks SQLite's synchronous mode: FULL syncs the WAL on
every commit and survives power loss; NORMAL syncs only at checkpoints, which
is several times faster on slow disks and may lose the last commits on power
loss, but never corrupts the file (a killed process loses nothing either way).
huey's own ``fsync`` flag only knows FULL and OFF, hence the small subclass.
"""
import sqlite3

from huey import PriorityRedisHuey, SqliteHuey
from huey.storage import SqliteStorage

QUEUE_NAME = "hueyscope"
BUSY_TIMEOUT_SECONDS = 10
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


class DurableSqliteStorage(SqliteStorage):
    """SqliteStorage with an explicit synchronous mode (FULL or NORMAL)."""

    def __init__(self, *args, synchronous="FULL", **kwargs):
        self.synchronous = synchronous
        super().__init__(*args, **kwargs)

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=%s" % self.synchronous)
        return conn


class DurableSqliteHuey(SqliteHuey):
    storage_class = DurableSqliteStorage


def check_sqlite_file(path):
    """Raise ValueError if ``path`` exists but is not a SQLite database.

    Reads the 16-byte header only, so a foreign file is never touched.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ValueError("cannot read %s: %s" % (path, exc.strerror))
    if header and header != b"SQLite format 3\x00":
        raise ValueError("%s is not a SQLite database" % path)


def make_huey(settings, name=QUEUE_NAME, **huey_kwargs):
    """Build the Huey instance the settings describe."""
    if settings.queue_scheme == "redis":
        return PriorityRedisHuey(name, url=settings.queue, **huey_kwargs)
    path = settings.queue_path
    check_sqlite_file(path)
    return DurableSqliteHuey(
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
