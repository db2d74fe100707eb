"""The queue on PostgreSQL: huey's PostgresHuey (psycopg 3), periodic tasks once a tick.

``--queue postgresql://host/db`` (or ``HUEYSCOPE_QUEUE``) builds
:class:`PostgresHuey`: huey's own storage -- ``FOR UPDATE SKIP LOCKED``
dequeue, LISTEN/NOTIFY wake-ups -- plus the tick claims of
:mod:`hueyscope.periodic` in a ``<prefix>_periodic_tick`` table, so many
consumers on many hosts run each periodic task once a tick. The driver is
an optional extra: ``pip install 'hueyscope[postgres]'``.

Delivery is huey's: a dequeue deletes the message (at-most-once), as on
SQLite with ``--delivery at-most-once``.
"""
import time

from huey.api import PostgresHuey as _HueyPostgresHuey
from huey.exceptions import ConfigurationError
from huey.storage import PostgresStorage

from hueyscope.periodic import KEEP_SECONDS, OncePerTick

class ClaimingPostgresStorage(PostgresStorage):
    """huey's PostgresStorage with a table of periodic tick claims."""

    def __init__(self, name="huey", create_tables=True, **kwargs):
        super().__init__(name, create_tables=False, **kwargs)
        prefix = self.table_kv[:-len("_kv")]
        self.table_tick = prefix + "_periodic_tick"
        self.ddl = self.ddl + [
            "create table if not exists %s (queue text not null, "
            "task text not null, tick text not null, "
            "claimed double precision not null, primary key (queue, task, tick))"
            % self.table_tick]
        if create_tables:
            self.initialize_schema()

    def enqueue_unclaimed(self, tick, messages):
        """Enqueue each ``(task key, data, priority)`` of ``tick`` no one claimed.

        A second consumer's claim of the same row waits for the first one's
        transaction, then finds the row and inserts nothing.
        """
        enqueued = []
        now = time.time()
        with self.db(commit=True) as curs:
            curs.execute("delete from %s where queue = %%s and claimed < %%s"
                         % self.table_tick, (self.name, now - KEEP_SECONDS))
            for i, (key, data, priority) in enumerate(messages):
                curs.execute("insert into %s (queue, task, tick, claimed) "
                             "values (%%s, %%s, %%s, %%s) on conflict do nothing"
                             % self.table_tick, (self.name, key, tick, now))
                if curs.rowcount == 1:
                    curs.execute("insert into %s (queue, data, priority) "
                                 "values (%%s, %%s, %%s)" % self.table_task,
                                 (self.name, data, priority or 0))
                    enqueued.append(i)
            if enqueued:
                curs.execute("select pg_notify(%s, %s)", (self.channel, ""))
        return enqueued


class PostgresHuey(OncePerTick, _HueyPostgresHuey):
    """huey's PostgresHuey whose periodic tasks run once a tick."""

    storage_class = ClaimingPostgresStorage


def make_postgres_huey(name, dsn, **huey_kwargs):
    """A :class:`PostgresHuey` on ``dsn``; one-line ValueErrors for bad input.

    huey creates its tables as it is built, so a server that is down, a
    database that does not exist or a missing driver shows up here.
    """
    try:
        return PostgresHuey(name, dsn=dsn, utc=True, **huey_kwargs)
    except ConfigurationError:
        raise ValueError("a postgresql:// queue needs psycopg 3: "
                         "pip install 'hueyscope[postgres]'")
    except Exception as exc:  # psycopg.OperationalError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError("cannot open queue %s: %s" % (_safe(dsn), first))


def _safe(dsn):
    """``dsn`` without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
