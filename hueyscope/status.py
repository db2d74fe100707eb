"""``hueyscope status``: what is in the queue right now.

For a SQLite queue it reads the file read-only with plain SQL, so it works
while consumers run, never creates or changes anything, and shows every
huey queue stored in the file. huey keeps results, locks and revocations in
one key/value table; they are told apart by their keys: ``<queue>.lock.<name>``
is a lock held by a running task (or left by a killed consumer, see
``hueyscope consume --flush-locks``), ``r:<task id>`` a revocation, anything
else a result waiting to be read.
"""
import json
import os
import sqlite3

import click

from hueyscope.options import BadInput, settings_options
from hueyscope.queue import check_sqlite_file

HUEY_TABLES = ("task", "schedule", "kv")


def _classify(queue, keys):
    lock_prefix = "%s.lock." % queue
    locks, revoked, results = [], 0, 0
    for key in keys:
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if key.startswith(lock_prefix):
            locks.append(key[len(lock_prefix):])
        elif key.startswith("r:"):
            revoked += 1
        elif ".rl." in key or key.startswith("%s.rl." % queue):
            continue  # rate-limit windows
        else:
            results += 1
    return sorted(locks), revoked, results


def sqlite_status(path):
    """{queue name: counts} for the SQLite queue file at ``path``.

    Raises ValueError (one line) for a missing file or one that is not a
    huey queue; never writes.
    """
    if not os.path.exists(path):
        raise ValueError("no queue at %s (nothing enqueued yet?)" % path)
    if os.path.isdir(path):
        raise ValueError("queue %s is a folder, not a SQLite file" % path)
    check_sqlite_file(path)
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % os.path.abspath(path),
                               uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise ValueError("cannot open queue %s: %s" % (path, exc))
    try:
        tables = {row[0] for row in conn.execute(
            "select name from sqlite_master where type = 'table'")}
        if not tables:
            raise ValueError("%s is an empty SQLite file, not a huey queue" % path)
        missing = [t for t in HUEY_TABLES if t not in tables]
        if missing:
            raise ValueError("%s is a SQLite database but not a huey queue "
                             "(no %s table)" % (path, missing[0]))
        queues = {}

        def entry(name):
            return queues.setdefault(name, {
                "pending": 0, "scheduled": 0, "next_due": None, "results": 0,
                "revoked": 0, "locks": []})

        for name, count in conn.execute(
                "select queue, count(*) from task group by queue"):
            entry(name)["pending"] = count
        for name, count, due in conn.execute(
                "select queue, count(*), min(timestamp) from schedule group by queue"):
            entry(name).update(scheduled=count, next_due=due)
        keys = {}
        for name, key in conn.execute("select queue, key from kv"):
            keys.setdefault(name, []).append(key)
        for name, names in keys.items():
            locks, revoked, results = _classify(name, names)
            entry(name).update(locks=locks, revoked=revoked, results=results)
        return queues
    except sqlite3.DatabaseError as exc:
        raise ValueError("cannot read queue %s: %s" % (path, exc))
    finally:
        conn.close()


def huey_status(huey):
    """The same counts through huey's storage API (Redis and friends)."""
    keys = list(huey.storage.result_items())
    locks, revoked, results = _classify(huey.name, keys)
    return {huey.name: {
        "pending": huey.pending_count(), "scheduled": huey.scheduled_count(),
        "next_due": None, "results": results, "revoked": revoked,
        "locks": locks}}


def _when(ts):
    import datetime

    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(
        ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.command()
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(settings, as_json):
    """Show queue depth, scheduled tasks, stored results and held locks.

    Reads a SQLite queue without writing to it, so it is safe to run at any
    time, next to running consumers.
    """
    try:
        if settings.queue_scheme == "sqlite":
            queues = sqlite_status(settings.queue_path)
        else:
            from hueyscope.apps import open_app

            queues = huey_status(open_app(settings))
    except ValueError as exc:
        raise BadInput(str(exc))
    if as_json:
        click.echo(json.dumps({"queue": settings.queue, "queues": queues},
                              indent=2, sort_keys=True))
        return
    click.echo("%s: %s" % ("queue file" if settings.queue_scheme == "sqlite"
                          else "queue", settings.queue))
    if not queues:
        click.echo("  (empty: no task, schedule or result yet)")
    for name, q in sorted(queues.items()):
        click.echo("queue %s" % name)
        click.echo("  pending    %6d   waiting for a worker" % q["pending"])
        click.echo("  scheduled  %6d   delayed or retrying; next due %s" % (
            q["scheduled"], _when(q["next_due"])))
        click.echo("  results    %6d   stored, not read yet" % q["results"])
        click.echo("  revoked    %6d   revocation flags" % q["revoked"])
        click.echo("  locks      %6d   %s" % (
            len(q["locks"]), ", ".join(q["locks"]) or "none held"))
