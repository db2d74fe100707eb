"""The lease tables of record, and the cursor that runs queue SQL on any engine.

Written once for SQLite and PostgreSQL: each statement names its types as
``{id}``, ``{blob}``..., and each engine gives its own (``SQLITE_TYPES``,
``POSTGRES_TYPES``); queue SQL is written in SQLite's ``?`` style with
huey's tables as ``{kv}`` and ``{task}`` and run through
:class:`QueueCursor`. What the tables are for is told in
:mod:`hueyscope.queue.leases`.
"""

# 2: the dead-letter table is the failed set (kind, error); 3: messages and
# leases name their task (hueyscope_name, task), unique key (hueyscope_unique,
# unique_key) and concurrency slot (hueyscope_slot and _limit, slot and
# slot_limit); pauses, unique keys held
LEASE_SCHEMA = 3
LOCK_MARK = ".lock."  # huey's lock keys are "<queue>.lock.<name>"

# The tables of record, written once: ``{id}`` is a row id (``{never_reused}``
# one never given twice), ``{bigint}``, ``{blob}`` and ``{real}`` the
# engine's types (see lease_tables).
TABLES = [
    # One row per process that took work from the queue.
    "create table if not exists hueyscope_holder ("
    "id {id}, host text not null, hostname text, "
    "pid integer not null, pid_start {bigint}, run_id text, "
    "started {real} not null, heartbeat {real} not null)",
    # One row per message taken and not yet settled. Its own id, never
    # reused: huey's task ids are reused as soon as the table empties.
    "create table if not exists hueyscope_lease ("
    "id {never_reused}, queue text not null, data {blob} not null, "
    "priority {real} not null default 0, holder {bigint} not null, "
    "taken {real} not null, task text, unique_key text, slot text, "
    "slot_limit integer)",
    "create index if not exists hueyscope_lease_holder on hueyscope_lease (holder)",
    # Who holds each lock_task lock (the lock itself is huey's kv row).
    "create table if not exists hueyscope_lock ("
    "queue text not null, key text not null, holder {bigint} not null, "
    "worker text, taken {real} not null, primary key (queue, key))",
    # How often each task was recovered, so a poison task is parked.
    "create table if not exists hueyscope_recoveries ("
    "queue text not null, task_id text not null, count integer not null, "
    "updated {real} not null, primary key (queue, task_id))",
    # The failed set: messages parked instead of run (kind 'lost': a poison
    # task; 'dropped': a task the consumer does not have) or failed for good
    # (kind 'failed'), each with its original message.
    "create table if not exists hueyscope_dead_letter ("
    "id {id}, queue text not null, task_id text, task text, "
    "data {blob} not null, priority {real} not null default 0, reason text, "
    "recoveries integer not null default 0, run_id text, parked {real} not null, "
    "kind text, error_type text, fingerprint text)",
    # The outbox of outcomes: a row per lease released because its task
    # reached an outcome, written in the transaction that releases it, so
    # the record can be put right after a crash (hueyscope.events.reconcile).
    "create table if not exists hueyscope_settled ("
    "id {id}, queue text not null, "
    "task_id text not null, task text, signal text not null, priority {real}, "
    "run_id text, ts {real} not null)",
    # Requests to stop a running task (hueyscope cancel): the consumer
    # holding its lease polls for them (hueyscope.consumer.control).
    "create table if not exists hueyscope_cancel ("
    "queue text not null, task_id text not null, lease {bigint}, "
    "holder {bigint}, reason text, requested {real} not null, "
    "primary key (queue, task_id))",
    # Paused task names of a queue ('*': all of them), see queue.control.
    "create table if not exists hueyscope_paused ("
    "queue text not null, task text not null, paused {real} not null, "
    "actor text, primary key (queue, task))",
    # The unique keys held, each by the task that holds it (queue.control).
    "create table if not exists hueyscope_unique ("
    "queue text not null, key text not null, task_id text not null, "
    "since {real} not null, primary key (queue, key))",
    "create index if not exists hueyscope_unique_task on hueyscope_unique "
    "(queue, task_id)",
]
SQLITE_TYPES = {"id": "integer primary key",
                "never_reused": "integer primary key autoincrement",
                "bigint": "integer", "blob": "blob", "real": "real"}
POSTGRES_TYPES = {"id": "bigserial primary key",
                  "never_reused": "bigserial primary key",
                  "bigint": "bigint", "blob": "bytea", "real": "double precision"}


def lease_tables(types):
    """The statements creating the lease tables, in an engine's column ``types``."""
    return [sql.format(**types) for sql in TABLES]


# SQLite's: its schema number is kept in a table of its own.
DDL = [
    "create table if not exists hueyscope_meta ("
    "key text primary key, value)",
] + lease_tables(SQLITE_TYPES) + [
    "insert or ignore into hueyscope_meta (key, value) "
    "values ('lease_schema', %d)" % LEASE_SCHEMA,
]


# Columns lease schema 2 added to hueyscope_dead_letter.
DEAD_LETTER_COLUMNS = ("kind", "error_type", "fingerprint")
# Columns lease schema 3 added: (table, column, type); {task} is huey's
# task table (see queue.control).
NAME_COLUMNS = (("{task}", "hueyscope_name", "text"),
                ("{task}", "hueyscope_unique", "text"),
                ("{task}", "hueyscope_slot", "text"),
                ("{task}", "hueyscope_limit", "integer"),
                ("hueyscope_lease", "task", "text"),
                ("hueyscope_lease", "unique_key", "text"),
                ("hueyscope_lease", "slot", "text"),
                ("hueyscope_lease", "slot_limit", "integer"))


class QueueCursor:
    """A cursor that runs queue SQL on any of hueyscope's storages.

    Statements are written once, in SQLite's ``?`` style with huey's tables
    as ``{kv}`` and ``{task}`` and the periodic claims as ``{tick}``; each
    storage names its tables (``queue_tables``) and its parameter style
    (``param_style``).
    """

    def __init__(self, storage, cursor):
        self.cursor = cursor
        self.tables = storage.queue_tables
        self.pyformat = storage.param_style == "pyformat"

    def _sql(self, sql):
        sql = sql.format(**self.tables)
        return sql.replace("?", "%s") if self.pyformat else sql

    def execute(self, sql, params=()):
        return self.cursor.execute(self._sql(sql), params)

    def executemany(self, sql, rows):
        return self.cursor.executemany(self._sql(sql), rows)
