"""``hueyscope status``: what is in the queue right now (see :func:`hueyscope.queue.operations.status`)."""
import json

import click

from hueyscope.events.task_view import progress_text, running_progress
from hueyscope.options import settings_options
from hueyscope.queue import operations


def _when(ts):
    import datetime

    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(
        ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _holder_text(item):
    if item["pid"] is None:
        return "a holder gone from the queue (dead)"
    state = "alive" if item["alive"] else "DEAD: %s" % item["dead_because"]
    return "run %s, pid %s on %s, %s" % (item["run_id"] or "-", item["pid"],
                                          item["host"], state)


@click.command(short_help="Show what is queued, scheduled, leased and locked.")
@settings_options(only=("queue", "events", "app", "lease_timeout"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(settings, as_json):
    """Show queue depth, scheduled tasks, results, leases and locks with holders.

    Reads a SQLite queue without writing to it, so it is safe to run at any
    time, next to running consumers. On a leased (at-least-once) queue it
    lists the tasks each consumer holds, consumers that died holding some
    (hueyscope recover or the next consumer puts them back), each lock's
    holder and age, and the tasks parked in the dead-letter table. Running
    tasks that report progress (hueyscope.progress) are listed with their
    last value, read from the event store.

    --app is read for a PostgreSQL or Redis queue only: a SQLite file is
    read directly.
    """
    if settings.queue_scheme == "sqlite":
        queue = settings.queue_path
    else:
        from hueyscope.apps import open_app

        queue = open_app(settings, events=False)
    queues = operations.status(queue, settings.lease_timeout)
    progress = running_progress(settings.events)
    if as_json:
        click.echo(json.dumps({"queue": settings.queue, "queues": queues,
                               "progress": progress},
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
        if "leases" not in q:
            continue
        leased = sum(item["tasks"] for item in q["leases"])
        click.echo("  leased     %6d   taken by consumers, outcome not stored yet"
                   % leased)
        for item in q["leases"]:
            click.echo("    %5d  %s; oldest taken %.0f s ago" % (
                item["tasks"], _holder_text(item), item["oldest_age"]))
        for item in q["lock_holders"]:
            click.echo("    lock %s held %.0f s by %s" % (
                item["lock"], item["age"], _holder_text(item)))
        click.echo("  failed     %6d   the failed set: failed for good, lost or "
                   "dropped (hueyscope failed)" % q["parked"])
        if q.get("unique_keys"):
            click.echo("  unique     %6d   keys held by tasks waiting or running"
                       % q["unique_keys"])
        for item in q.get("slots", []):
            click.echo("  limited    %6d   of %d running of %s; %d waiting" % (
                item["running"], item["limit"], item["slot"], item["waiting"]))
        for item in q.get("paused", []):
            click.echo("  PAUSED     %6d   %s since %s%s (hueyscope resume)" % (
                item["held_back"], "the whole queue" if item["whole_queue"]
                else "task %s" % item["task"], _when(item["since"]),
                ", by %s" % item["actor"] if item["actor"] else ""))
    _show_progress(progress)


def _show_progress(progress):
    # From the event store: what running tasks said of themselves.
    if not progress:
        return
    click.echo("running tasks with progress (hueyscope.progress)")
    for item in progress:
        click.echo("  %s %s  %s" % (item["task"], item["task_id"],
                                    progress_text(item)))
