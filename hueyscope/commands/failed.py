"""``hueyscope failed``, ``retry`` and ``discard``: the failed set from the command line.

What they do is :mod:`hueyscope.queue.operations`; this is how it is asked.
"""
import datetime
import json

import click

from hueyscope.options import BadInput
from hueyscope.queue import operations
from hueyscope.queue.failed import KINDS


def _options(fn):
    from hueyscope.events.retention import Duration
    from hueyscope.options import Choice, settings_options

    fn = click.option("--kind", type=Choice(KINDS), default=None,
                      help="Only entries of this kind.")(fn)
    fn = click.option("--since", type=Duration(), default=None,
                      help="Only entries parked within this long, e.g. 1d, "
                           "12h, 30m.")(fn)
    fn = click.option("--fingerprint", "fingerprint", default=None,
                      help="Only entries whose error has this fingerprint "
                           "(as the report groups failures).")(fn)
    fn = click.option("--task", default=None,
                      help="Only entries of this task (module.function, or "
                           "the function's name).")(fn)
    return settings_options(only=("queue", "events", "app", "durability",
                                  "delivery"))(fn)


def _open(settings, record=False):
    from hueyscope.apps import open_app

    huey = open_app(settings, events=record)
    if not getattr(huey.storage, "leased", False):
        raise BadInput("queue %s keeps no failed set: it is not leased "
                       "(Redis, or at-most-once delivery)" % settings.queue)
    if record:
        import hueyscope

        hueyscope.attach(huey, events=settings.events)
    return huey


def _when(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def _line(entry):
    return "%5d  %s  %-7s  %-28s  %s  %s" % (
        entry["id"], _when(entry["parked"]), entry["kind"], entry["task"] or "?",
        (entry["task_id"] or "?")[:8], entry["reason"] or "")


@click.command(short_help="List tasks that failed for good, lost or dropped.")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def failed_command(settings, task, fingerprint, since, kind, as_json):
    """List the failed set: tasks that will not run again unless retried.

    Each entry keeps the task's original message: failed for good (retries
    used up), lost (parked after killing its consumer too often) or dropped
    (the consumer does not have the task).

    \b
    Examples:
        hueyscope failed
        hueyscope failed --task send_invoice --since 1d
        hueyscope retry --fingerprint 3f2a9c0d1e4b5a67
    """
    huey = _open(settings)
    entries = operations.failed(huey, task, fingerprint, since, kind)
    if as_json:
        click.echo(json.dumps(entries, indent=2, sort_keys=True))
        return
    for entry in entries:
        click.echo(_line(entry))
    groups = {}
    for entry in entries:
        groups[entry["fingerprint"]] = groups.get(entry["fingerprint"], 0) + 1
    click.echo("%d entr%s in the failed set of queue %s" % (
        len(entries), "y" if len(entries) == 1 else "ies", huey.name))
    for fp, n in sorted(groups.items(), key=lambda kv: -kv[1]):
        if fp:
            click.echo("  %d x fingerprint %s: hueyscope retry --fingerprint %s"
                       % (n, fp, fp))


@click.command(short_help="Put failed-set tasks back on the queue.")
@click.argument("ids", nargs=-1, type=int)
@_options
@click.option("--dry-run", is_flag=True, help="Show what would be retried.")
def retry_command(settings, ids, task, fingerprint, since, kind, dry_run):
    """Put tasks of the failed set back on the queue: a new attempt series.

    Name them by entry IDS (see hueyscope failed) or filters. Each task gets
    its declared retries back and is recorded as requeued in the event
    store; its history there shows both series.
    """
    huey = _open(settings, record=not dry_run)
    done = operations.retry(huey, ids, task, fingerprint, since, kind,
                            dry_run=dry_run)
    for entry in done.touched:
        click.echo("%sretry %s" % ("would " if dry_run else "", _line(entry)))
    click.echo("%s%d task(s) back on the queue" % (
        "dry run: " if dry_run else "", done.count))


@click.command(short_help="Delete tasks from the failed set.")
@click.argument("ids", nargs=-1, type=int)
@_options
@click.option("--dry-run", is_flag=True, help="Show what would be deleted.")
def discard_command(settings, ids, task, fingerprint, since, kind, dry_run):
    """Delete tasks from the failed set for good. Name them by IDS or filters.

    Each is recorded as a discard event of its task in the event store.
    """
    huey = _open(settings, record=not dry_run)
    done = operations.discard(huey, ids, task, fingerprint, since, kind,
                            dry_run=dry_run)
    for entry in done.touched:
        click.echo("%sdiscard %s" % ("would " if dry_run else "", _line(entry)))
    n = done.count
    click.echo("%s%d entr%s discarded" % ("dry run: " if dry_run else "", n,
                                          "y" if n == 1 else "ies"))
