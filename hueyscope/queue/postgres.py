"""The queue on PostgreSQL: huey's PostgresHuey (psycopg 3), leased, periodic tasks once a tick.

``--queue postgresql://host/db`` (or ``HUEYSCOPE_QUEUE``) builds a Huey on
huey's own storage -- ``FOR UPDATE SKIP LOCKED`` dequeue, LISTEN/NOTIFY
wake-ups -- plus the tick claims of :mod:`hueyscope.queue.periodic` in a
``<prefix>_periodic_tick`` table, so many consumers on many hosts run each
periodic task once a tick. The driver is an optional extra:
``pip install 'hueyscope[postgres]'``.

Delivery is at-least-once by default, with the SQLite leased queue's
semantics and tables of record (:mod:`hueyscope.queue.leases`): the dequeue
moves the message into ``hueyscope_lease`` in one statement (a DELETE ...
RETURNING feeding an INSERT, on the row SKIP LOCKED found); the write that
makes the outcome durable deletes the lease in its own transaction;
:mod:`hueyscope.queue.recovery` puts dead holders' leases back, under a
transaction-level advisory lock so two consumers never recover the same
lease. Holders on other hosts are judged by heartbeat alone.
``--delivery at-most-once`` is huey's delete-on-dequeue.

Building a Huey (every consumer start, producer and command) takes no lock
a live queue's workers need: it reads the catalog and creates only what is
missing (see :meth:`ClaimingPostgresStorage.initialize_schema`). A storage
call whose transaction fails on a transient error -- a deadlock, a
serialization failure, a lock not available, a dropped connection -- is
run again after a short backoff, a few times
(:mod:`hueyscope.queue.pg_retries`); a pipeline
step or a retry whose next write still fails keeps its lease, so recovery
finishes its work (``LeasedHuey.execute``).
"""
import contextlib
import logging
import os
import re
import threading
import time
import weakref

from huey.api import PostgresHuey as _HueyPostgresHuey
from huey.exceptions import ConfigurationError
from huey.storage import PostgresStorage

from hueyscope.queue.leased_huey import LeasedHuey
from hueyscope.queue.contract import LeasedStorage
from hueyscope.queue.leases import LeaseKeeping
from hueyscope.queue.periodic import OncePerTick, enqueue_unclaimed
from hueyscope.queue.pg_retries import RetryingCalls, server_ended, with_retries
from hueyscope.queue.control import NOT_PAUSED, SLOT_FREE
from hueyscope.queue.tables import (DEAD_LETTER_COLUMNS, NAME_COLUMNS,
                                    POSTGRES_TYPES, lease_tables)

try:
    import psycopg
except ImportError:  # the postgres extra is not installed: make_postgres_huey says so
    psycopg = None

logger = logging.getLogger("hueyscope.postgres")

# The tables of record, as on SQLite, in PostgreSQL's types.
LEASE_DDL = lease_tables(POSTGRES_TYPES) + [
    "alter table hueyscope_dead_letter add column if not exists %s text" % c
    for c in DEAD_LETTER_COLUMNS]
# Advisory locks are the database's, not a schema's: each key names the
# schema the tables are in, so queues in other schemas of the database
# (other apps, other tests) never wait for each other.
_IN_SCHEMA = "hashtext(%s || coalesce(current_schema(), ''))"
# One builder creates what is missing at a time; held by the session, so
# each statement commits on its own (and a dead builder holds nothing).
SCHEMA_LOCK = "select pg_advisory_lock(%s)" % (_IN_SCHEMA % "'hueyscope_schema:'")
# One recovery at a time across every consumer of the schema's queues.
RECOVERY_LOCK = "select pg_advisory_xact_lock(%s)" % (
    _IN_SCHEMA % "'hueyscope_recovery:'")

# The dequeue, in one statement: the next message neither paused nor of a
# full concurrency slot, not among those skipped already (%s: their ids),
# moved into a lease unless it has a concurrency limit; returns (message id,
# its limit, its slot, lease id, data, unique key), the last three null
# when a limit left it to TAKE_LIMITED. %(task)s is huey's task table.
_MOVED = ("returning queue, data, priority, hueyscope_name, hueyscope_unique, "
          "hueyscope_slot, hueyscope_limit")
_LEASE = (
    "insert into hueyscope_lease (queue, data, priority, holder, taken, task, "
    "unique_key, slot, slot_limit) select queue, data, priority, %%s, %%s, "
    "hueyscope_name, hueyscope_unique, hueyscope_slot, hueyscope_limit "
    "from moved")
TAKE = (
    "with picked as (select id, hueyscope_limit as lim, hueyscope_slot as slot "
    "from %(task)s t where queue = %%s and " + NOT_PAUSED.replace("%", "%%") +
    " and " + SLOT_FREE.replace("%", "%%") + " and not (id = any(%%s::bigint[])) "
    "order by priority desc, id limit 1 for update skip locked), "
    "moved as (delete from %(task)s where id = (select id from picked where "
    "lim is null) " + _MOVED + "), "
    "leased as (" + _LEASE + " returning id, data, unique_key) "
    "select p.id, p.lim, p.slot, l.id, l.data, l.unique_key from picked p "
    "left join leased l on true")
# A message with a concurrency limit, once its slot is known to be free:
# %%s its id.
TAKE_LIMITED = (
    "with moved as (delete from %(task)s where id = %%s " + _MOVED + ") " +
    _LEASE + " returning id, data, unique_key")
# Taken before its slot's leases are counted, and held to the commit that
# writes the lease: two consumers never both count the last free slot.
SLOT_LOCK = "select pg_advisory_xact_lock(%s)" % (_IN_SCHEMA % "%s")
SLOT_COUNT = "select count(*) from hueyscope_lease where queue = %s and slot = %s"
SKIPS = 20  # messages of full slots passed over in one dequeue, at most

_CREATES = re.compile(r"\s*create (?:table|index) if not exists (\w+)", re.I)
_ADDS = re.compile(r"\s*alter table (\w+) add column if not exists (\w+)", re.I)


def missing_ddl(conn, ddl):
    """The statements of ``ddl`` whose table, index or column is not there yet.

    Read from the catalog, which takes no lock on any table, in the schema
    new tables go to (``current_schema()``). A statement that creates none
    of these is always listed.
    """
    relations = set()
    for sql in ddl:
        created, added = _CREATES.match(sql), _ADDS.match(sql)
        if created:
            relations.add(created.group(1).lower())
        elif added:
            relations.add(added.group(1).lower())
    relations = sorted(relations)
    present = {name for name, in conn.execute(
        "select c.relname from pg_class c join pg_namespace n on "
        "n.oid = c.relnamespace where n.nspname = current_schema() "
        "and c.relname = any(%s)", (relations,))}
    columns = set(conn.execute(
        "select c.relname, a.attname from pg_attribute a join pg_class c on "
        "c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = current_schema() and c.relname = any(%s) "
        "and a.attnum > 0 and not a.attisdropped", (relations,)).fetchall())
    missing = []
    for sql in ddl:
        created, added = _CREATES.match(sql), _ADDS.match(sql)
        if created:
            there = created.group(1).lower() in present
        elif added:
            there = (added.group(1).lower(), added.group(2).lower()) in columns
        else:
            there = False
        if not there:
            missing.append(sql)
    return missing


@with_retries
class ClaimingPostgresStorage(RetryingCalls, PostgresStorage):
    """huey's PostgresStorage with a table of periodic tick claims.

    Its calls are retried on transient failures (:class:`RetryingCalls`).
    """

    param_style = "pyformat"  # for queue SQL written once (tables.QueueCursor)
    to_blob = staticmethod(bytes)

    def __init__(self, name="huey", create_tables=True, **kwargs):
        super().__init__(name, create_tables=False, **kwargs)
        prefix = self.table_kv[:-len("_kv")]
        self.table_tick = prefix + "_periodic_tick"
        self.queue_tables = {"kv": self.table_kv, "task": self.table_task,
                             "tick": self.table_tick}
        self.ddl = self.ddl + [
            "create table if not exists %s (queue text not null, "
            "task text not null, tick text not null, "
            "claimed double precision not null, primary key (queue, task, tick))"
            % self.table_tick]
        if create_tables:
            self.initialize_schema()

    def initialize_schema(self):
        """Create what is missing of the tables; when nothing is, take no lock.

        Every consumer start, producer and command builds a Huey while
        other processes' workers use the queue, and a statement on an
        existing table still locks it (CREATE INDEX IF NOT EXISTS, ALTER
        TABLE ... IF NOT EXISTS): one transaction locking huey's task table
        then the lease table deadlocked with workers locking them the other
        way round. So the catalog is read first, without a lock. What is
        missing is created under one advisory lock, taken first (CREATE
        TABLE IF NOT EXISTS is not safe against itself: two builders would
        see one fail on a duplicate type), each statement in a transaction
        of its own, so a builder holds at most one table's lock at a time.
        """
        conn = self._create_connection()  # autocommit: a statement, a transaction
        try:
            if not missing_ddl(conn, self.ddl):
                return
            conn.execute(SCHEMA_LOCK)  # released as the connection closes
            for sql in missing_ddl(conn, self.ddl):
                conn.execute(sql)
        finally:
            self._close_quiet(conn)

    def flush_all(self):
        super().flush_all()
        self.sql("delete from %s where queue = %%s" % self.table_tick, (self.name,))

    def enqueue_unclaimed(self, tick, messages):
        """Enqueue each ``(task key, data, priority)`` of ``tick`` no one
        claimed (see :func:`hueyscope.queue.periodic.enqueue_unclaimed`),
        waking the consumers that listen."""
        return enqueue_unclaimed(self, tick, messages, then=self._notify)

    def _notify(self, curs):
        curs.execute("select pg_notify(%s, %s)", (self.channel, ""))


class PostgresHuey(OncePerTick, _HueyPostgresHuey):
    """huey's PostgresHuey (at-most-once) whose periodic tasks run once a tick."""

    storage_class = ClaimingPostgresStorage


@with_retries
class LeasedPostgresStorage(LeaseKeeping, ClaimingPostgresStorage, LeasedStorage):
    """ClaimingPostgresStorage with leased dequeue (see the module docstring).

    A :class:`~hueyscope.queue.contract.LeasedStorage`.

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

    def __init__(self, name="huey", create_tables=True, **kwargs):
        super().__init__(name, create_tables=False, **kwargs)
        self.ddl = self.ddl + LEASE_DDL + [
            "alter table %s add column if not exists %s %s"
            % (table.format(**self.queue_tables), column, kind)
            for table, column, kind in NAME_COLUMNS]
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

    # -- retries (RetryingCalls) --------------------------------------------

    def _connection_lost(self):
        conn = getattr(self._conns, "conn", None)
        return conn is not None and (conn.closed or conn.broken)

    def _drop_connection(self):
        conn = getattr(self._conns, "conn", None)
        if conn is not None:
            self._close_quiet(conn)
            self._conns.conn = None

    def _attempt_state(self):
        # A call may hand the thread's lease to its transaction before
        # that transaction fails (park_current does): the next attempt
        # starts from the lease as it was.
        local = self._local
        return getattr(local, "lease", None), getattr(local, "release_on_write", False)

    def _restore_attempt_state(self, saved):
        self._local.lease, self._local.release_on_write = saved

    # -- transactions that also settle leases -----------------------------

    @contextlib.contextmanager
    def db(self, commit=False, close=False):
        # huey's BaseSqlStorage.db() on this thread's connection, with no
        # lock, and every write transaction also deleting the leases whose
        # outcome is now durable.
        conn, cursor = self._begin() if commit else self._cursor()
        released = None
        try:
            if commit:
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

    def _cursor(self):
        conn = self.conn
        return conn, conn.cursor()

    def _begin(self):
        """(connection, cursor) in a new transaction.

        A connection the server dropped while it was idle (a restart, an
        idle timeout) is found out at its next statement: when that is the
        BEGIN, nothing was done, and a new connection begins instead. This
        covers every transaction, those of callers that do not retry
        (recovery, heartbeats) too.
        """
        conn, cursor = self._cursor()
        try:
            cursor.execute(self.begin_sql)
        except psycopg.OperationalError as exc:
            cursor.close()
            if not (conn.closed or conn.broken or server_ended(exc)):
                raise
            logger.warning("The queue's connection was dropped; reconnecting.")
            self._drop_connection()
            conn, cursor = self._cursor()  # a new connection
            try:
                cursor.execute(self.begin_sql)
            except BaseException:
                cursor.close()
                raise
        return conn, cursor

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

    def enqueue(self, data, priority=None):
        with self.db(commit=True) as curs:
            self._insert_message(curs, data, priority)
            self._wake(curs)

    def _wake(self, curs):
        curs.execute("select pg_notify(%s, %s)", (self.channel, ""))

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
        if self._holder is None and not self._has_task():
            # Nothing to take: no holder row yet (a transaction of its own),
            # so an idle first read is as quick as huey's, and the LISTEN
            # that follows it misses no NOTIFY.
            return None
        holder = self._ensure_holder()
        with self._take_lock, self.db(commit=True) as curs:
            row = self._take(curs, holder)
            if row is None:
                return None
            self._taken += 1  # under the take lock: the order of taking
            seq = self._taken
        self._took_unique(row[0], row[2])
        local = self._thread()
        local.lease, local.seq = row[0], seq
        self._ensure_heartbeat()
        return bytes(row[1])

    def _take(self, curs, holder):
        """(lease id, data, unique key) of the next message, leased inside
        the open transaction; None if none may be taken."""
        tables = {"task": self.table_task}
        skipped = []
        while len(skipped) <= SKIPS:
            curs.execute(TAKE % tables, (self.name, skipped, holder, time.time()))
            row = curs.fetchone()
            if row is None:
                return None
            message, limit, slot = row[:3]
            if limit is None:
                return row[3:]
            # Counted again under the slot's lock, in a snapshot taken after
            # every earlier holder of the lock committed its lease.
            curs.execute(SLOT_LOCK, ("hueyscope_slot:%s:%s" % (self.name, slot),))
            curs.execute(SLOT_COUNT, (self.name, slot))
            if curs.fetchone()[0] < limit:
                curs.execute(TAKE_LIMITED % tables, (message, holder, time.time()))
                return curs.fetchone()
            skipped.append(message)  # full after all: it keeps its place
        return None

    def _has_task(self):
        with self.db() as curs:
            curs.execute("select 1 from %s where queue = %%s limit 1"
                         % self.table_task, (self.name,))
            return curs.fetchone() is not None

    def put_back_unstarted(self):
        """Nothing to put back: nothing is taken ahead here."""
        return 0

    def flush_all(self):
        super().flush_all()
        self.sql("delete from hueyscope_lease where queue = %s", (self.name,))
        self.sql("delete from hueyscope_unique where queue = %s", (self.name,))


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
