"""The queue: everything that decides work, read or written in the queue database.

Imports only go down this list; nothing here imports the recorder
(:mod:`hueyscope.events`): what both need lives in :mod:`hueyscope.signals`.

- ``factory``   Settings -> Huey instance (SQLite, PostgreSQL, Redis)
- ``sqlite``    the SQLite storages, leased and not, and SqliteHuey
- ``postgres``  the PostgreSQL storages and PostgresHuey
- ``leased_huey`` the Huey side of a leased queue
- ``recovery``  dead holders' leases back on the queue, locks freed
- ``operations`` what is done by hand: retry, discard, revoke, restore, pause,
  resume, recover, status
- ``control``   what consumers may take: pauses, unique keys, concurrency limits
- ``messages``  messages written with their name, unique key and slot
- ``failed``    the failed set: select, retry, discard
- ``leases``    what every leased storage shares; ``QueueCursor``
- ``contract``  ``LeasedStorage``: what every leased storage must provide
- ``view``      a read-only view of a queue (status, metrics, alerts)
- ``periodic``  periodic tasks once per tick; ``liveness``; ``files``
"""
from hueyscope.queue.factory import (POSTGRES_SCHEMES, QUEUE_NAME, SYNCHRONOUS,
                                     make_huey, open_queue)
from hueyscope.queue.files import (BUSY_TIMEOUT_SECONDS, HUEY_TABLES, OUR_PREFIX,
                                   check_queue_file, check_sqlite_file)
from hueyscope.queue.sqlite import DurableSqliteHuey, DurableSqliteStorage, SqliteHuey

__all__ = ["POSTGRES_SCHEMES", "QUEUE_NAME", "SYNCHRONOUS", "make_huey",
           "open_queue", "BUSY_TIMEOUT_SECONDS", "HUEY_TABLES", "OUR_PREFIX",
           "check_queue_file", "check_sqlite_file", "DurableSqliteHuey",
           "DurableSqliteStorage", "SqliteHuey"]
