"""The queue on PostgreSQL: huey's PostgresHuey (psycopg 3), leased, periodic tasks once a tick.

``--queue postgresql://host/db`` (or ``HUEYSCOPE_QUEUE``) builds a Huey on
huey's own storage -- ``FOR UPDATE SKIP LOCKED`` dequeue, LISTEN/NOTIFY
wake-ups -- plus the tick claims of :mod:`hueyscope.periodic` in a
``<prefix>_periodic_tick`` table, so many consumers on many hosts run each
periodic task once a tick. The driver is an optional extra:
``pip install 'hueyscope[postgres]'``.

Delivery is at-least-once by default, with the SQLite leased queue's
semantics and tables of record (:mod:`hueyscope.leases`): the dequeue
moves the message into ``hueyscope_lease`` in one statement (a DELETE ...
RETURNING feeding an INSERT, on the row SKIP LOCKED found); the write that
makes the outcome durable deletes the lease in its own transaction;
:mod:`hueyscope.recovery` puts dead holders' leases back, under a
transaction-level advisory lock so two consumers never recover the same
lease. Holders on other hosts are judged by heartbeat alone.
``--delivery at-most-once`` is huey's delete-on-dequeue.
"""
import contextlib
import os
import re
import threading
import time
import weakref

from huey.api import PostgresHuey as _HueyPostgresHuey
from huey.exceptions import ConfigurationError
from huey.storage import PostgresStorage

from hueyscope.leases import DEAD_LETTER_COLUMNS, LeasedHuey, LeaseKeeping
from hueyscope.periodic import KEEP_SECONDS, OncePerTick

# The tables of record, as on SQLite (psycopg's parameter style).
LEASE_DDL = [
    "create table if not exists hueyscope_holder ("
    "id bigserial primary key, host text not null, hostname text, "
    "pid integer not null, pid_start bigint, run_id text, "
    "started double precision not null, heartbeat double precision not null)",
    "create table if not exists hueyscope_lease ("
    "id bigserial primary key, queue text not null, data bytea not null, "
    "priority double precision not null default 0, holder bigint not null, "
    "taken double precision not null)",
    "create index if not exists hueyscope_lease_holder on hueyscope_lease (holder)",
    "create table if not exists hueyscope_lock ("
    "queue text not null, key text not null, holder bigint not null, "
    "worker text, taken double precision not null, primary key (queue, key))",
    "create table if not exists hueyscope_recoveries ("
    "queue text not null, task_id text not null, count integer not null, "
    "updated double precision not null, primary key (queue, task_id))",
    "create table if not exists hueyscope_settled ("
    "id bigserial primary key, queue text not null, task_id text not null, "
    "task text, signal text not null, priority double precision, "
    "run_id text, ts double precision not null)",
    "create table if not exists hueyscope_dead_letter ("
    "id bigserial primary key, queue text not null, task_id text, task text, "
    "data bytea not null, priority double precision not null default 0, "
    "reason text, recoveries integer not null default 0, run_id text, "
    "parked double precision not null, kind text, error_type text, "
    "fingerprint text)",
] + ["alter table hueyscope_dead_letter add column if not exists %s text" % c
     for c in DEAD_LETTER_COLUMNS]
SCHEMA_LOCK = "select pg_advisory_xact_lock(hashtext('hueyscope_schema'))"
# One recovery at a time across every consumer of the database.
RECOVERY_LOCK = "select pg_advisory_xact_lock(hashtext('hueyscope_recovery'))"

_CREATES = re.compile(r"create (?:unique )?(?:table|index) if not exists (\w+)", re.I)
_ADDS = re.compile(r"alter table (\w+) add column if not exists (\w+)", re.I)
MISSING = """select
  (select count(*) from unnest(%s::text[]) as r(name)
   where to_regclass(r.name) is null)
+ (select count(*) from unnest(%s::text[], %s::text[]) as c(rel, col)
   where not exists (select 1 from pg_attribute a where a.attrelid =
     to_regclass(c.rel) and a.attname = c.col and not a.attisdropped))"""


def schema_present(curs, ddl):
    """Whether every table, index and column the statements ``ddl`` create
    is there already (False for a statement of any other kind)."""
    names, rels, cols = [], [], []
    for sql in ddl:
        added = _ADDS.match(sql)
        created = _CREATES.match(sql)
        if added:
            rels.append(added.group(1))
            cols.append(added.group(2))
        elif created:
            names.append(created.group(1))
        else:
            return False
    curs.execute(MISSING, (names, rels, cols))
    return curs.fetchone()[0] == 0


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

    def initialize_schema(self):
        # CREATE TABLE IF NOT EXISTS is not safe against itself in
        # PostgreSQL: two consumers starting at once would see one of them
        # fail on a duplicate type. One creates; the other waits, then finds
        # every table there.
        with self.db(commit=True, close=True) as curs:
            # The DDL locks tables even when it has nothing to do (an index
            # IF NOT EXISTS takes a SHARE lock on its table): a process
            # starting while workers run would wait on the lease table and
            # deadlock with a release that enqueues next. A complete schema
            # is only read.
            if schema_present(curs, self.ddl):
                return
            curs.execute(SCHEMA_LOCK)
            if schema_present(curs, self.ddl):
                return  # made by the process this one waited for
            for sql in self.ddl:
                curs.execute(sql)

    def flush_all(self):
        super().flush_all()
        self.sql("delete from %s where queue = %%s" % self.table_tick, (self.name,))

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
    """huey's PostgresHuey (at-most-once) whose periodic tasks run once a tick."""

    storage_class = ClaimingPostgresStorage


class LeasedPostgresStorage(LeaseKeeping, ClaimingPostgresStorage):
    """ClaimingPostgresStorage with leased dequeue (see the module docstring).

    Each thread holds at most one lease, the task it runs. A lease is
    deleted in the transaction of the write that makes its outcome durable
    (a result, a retry's enqueue or schedule, a continuation), or by the
    process's next transaction when the outcome writes nothing.

    Each thread has a connection of its own: huey's storage shares one
    behind a lock, so every commit of every worker waits for the others',
    and a leased task commits twice (its lease, its outcome). Only taking a
    message is one at a time, so the order of taking is the queue's order.
    """

    leased = True
    prefetch = False  # leases are taken one at a time
    param_style = "pyformat"
    to_blob = staticmethod(bytes)

    def __init__(self, name="huey", create_tables=True, **kwargs):
        super().__init__(name, create_tables=False, **kwargs)
        self.ddl = self.ddl + LEASE_DDL
        self.queue_tables = {"kv": self.table_kv, "task": self.table_task}
        self.run_id_source = None
        self._reset_lease_state()
        self._reset_connections()
        if create_tables:
            self.initialize_schema()
        ref = weakref.ref(self)
        os.register_at_fork(
            after_in_child=lambda: ref() and ref()._after_fork())

    def _reset_connections(self):
        self._conns = threading.local()
        self._take_lock = threading.Lock()
        self._holder_lock = threading.Lock()
        self._taken = 0

    def _after_fork(self):
        # A forked worker is a holder of its own; the parent's connections
        # are the parent's (psycopg never closes them from a child).
        self._conn = None
        self._listen_local = threading.local()
        self._reset_lease_state()
        self._reset_connections()

    @property
    def conn(self):
        conn = getattr(self._conns, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            self._close_quiet(conn)
            conn = None
        if conn is None:
            conn = self._conns.conn = self._create_connection()
        return conn

    def close(self):
        conn = getattr(self._conns, "conn", None)
        if conn is not None:
            self._close_quiet(conn)
            self._conns.conn = None
        return super().close()

    def lock_for_recovery(self, curs):
        curs.execute(RECOVERY_LOCK)

    # -- transactions that also settle leases -----------------------------

    @contextlib.contextmanager
    def db(self, commit=False, close=False):
        # huey's BaseSqlStorage.db() on this thread's connection, with no
        # lock, and every write transaction also deleting the leases whose
        # outcome is now durable.
        conn = self.conn
        cursor = conn.cursor()
        released = None
        try:
            if commit:
                cursor.execute(self.begin_sql)
                released = self._release_in(cursor)
            yield cursor
        except BaseException:
            if commit:
                self._rollback_quiet(conn)
                if released is not None:
                    self._unrelease(released)  # the leases are still held
            raise
        else:
            if commit:
                conn.commit()
        finally:
            cursor.close()
            if close:
                self._close_quiet(conn)
                self._conns.conn = None

    def _rollback_quiet(self, conn):
        try:
            conn.rollback()
        except Exception:
            pass

    # -- the holder: registered on its own, before the first lease ---------

    def _ensure_holder(self):
        # Threads take leases at once here: one holder row per process, in
        # a transaction of its own, so no lease names a holder rolled back.
        if self._holder is not None:
            return self._holder
        with self._holder_lock:
            if self._holder is None:
                with self.db(commit=True) as curs:
                    self._holder = LeaseKeeping._holder_in(self, curs)
                self._holder_new = False
        return self._holder

    def _holder_in(self, curs):
        return self._ensure_holder() if self._holder is None else self._holder

    def put_if_empty(self, key, value, ttl=None):
        self._ensure_holder()
        return super().put_if_empty(key, value, ttl)

    def _release_in(self, curs):
        own = self._own_releases()
        ids = list(own)
        while self._pending:
            try:
                ids.append(self._pending.popleft())
            except IndexError:  # another thread's transaction took it
                break
        if ids:
            curs.execute("delete from hueyscope_lease where id = any(%s)", (ids,))
            self._write_outcomes(curs, ids)
        return ids, own

    def _unrelease(self, released):
        ids, own = released
        self._pending.extend(i for i in ids if i not in own)
        self._unrelease_own(own)

    # -- writes that make an outcome durable ------------------------------

    def put_data(self, key, value, is_result=False):
        with self.db(commit=True) as curs:
            curs.execute("insert into %s (queue, key, value) values (%%s, %%s, %%s) "
                         "on conflict (queue, key) do update set "
                         "value = excluded.value" % self.table_kv,
                         (self.name, self._key(key), value))

    def add_to_schedule(self, data, ts):
        with self.db(commit=True) as curs:
            curs.execute("insert into %s (queue, data, timestamp) "
                         "values (%%s, %%s, %%s)" % self.table_schedule,
                         (self.name, data, ts.timestamp()))

    # -- dequeue ----------------------------------------------------------

    def _dequeue(self):
        holder = self._ensure_holder()
        with self._take_lock, self.db(commit=True) as curs:
            curs.execute(
                "with moved as (delete from {t} where id = ("
                "select id from {t} where queue = %s "
                "order by priority desc, id limit 1 for update skip locked) "
                "returning queue, data, priority) "
                "insert into hueyscope_lease (queue, data, priority, holder, taken) "
                "select queue, data, priority, %s, %s from moved "
                "returning id, data".format(t=self.table_task),
                (self.name, holder, time.time()))
            row = curs.fetchone()
            if row is None:
                return None
            self._taken += 1  # under the take lock: the order of taking
            seq = self._taken
        local = self._thread()
        local.lease, local.seq = row[0], seq
        self._ensure_heartbeat()
        return bytes(row[1])

    def taken_seq(self):
        """The order in which this process took the calling thread's task."""
        return self._thread().seq

    def put_back_unstarted(self):
        return 0  # nothing is taken ahead

    def flush_all(self):
        super().flush_all()
        self.sql("delete from hueyscope_lease where queue = %s", (self.name,))


class LeasedPostgresHuey(OncePerTick, LeasedHuey, _HueyPostgresHuey):
    """huey's PostgresHuey with at-least-once delivery (a leased queue)."""

    storage_class = LeasedPostgresStorage


def make_postgres_huey(name, dsn, leased=True, **huey_kwargs):
    """A Huey on ``dsn``, leased or not; one-line ValueErrors for bad input.

    huey creates its tables as it is built, so a server that is down, a
    database that does not exist or a missing driver shows up here.
    """
    huey_class = LeasedPostgresHuey if leased else PostgresHuey
    huey_kwargs.setdefault("utc", True)
    try:
        return huey_class(name, dsn=dsn, **huey_kwargs)
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
