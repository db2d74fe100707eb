"""``hueyscope recover``: dead consumers' work back on the queue, by hand.

The recovery itself is :func:`hueyscope.queue.operations.recover`; this is
its command line, and the lease options ``consume`` shares.
"""
import click

from hueyscope.options import LEASE_SETTINGS, QUEUE_SETTINGS, BadInput, settings_options
from hueyscope.queue import operations


def _describe(entry):
    return "%s %s (run %s, priority %s)" % (
        entry["task_id"] or "?", entry["task"] or "?", entry["run_id"] or "-",
        "%g" % entry["priority"] if entry["priority"] is not None else "-")


def echo_outcome(outcome, dry_run=False):
    verb = "would " if dry_run else ""
    for h, reason in outcome.dead:
        click.echo("dead holder: pid %d on %s, run %s: %s" % (
            h.pid, h.hostname, h.run_id or "-", reason))
    for entry in outcome.requeued:
        click.echo("%srequeue  %s [recovery %d]" % (verb, _describe(entry),
                                                    entry["recoveries"]))
    for entry in outcome.parked:
        click.echo("%spark     %s: %s" % (verb, _describe(entry), entry["reason"]))
    for entry in outcome.settled:
        click.echo("%ssettle   %s: its result is stored, not run again" % (
            verb, _describe(entry)))
    for entry in outcome.continued:
        click.echo("%senqueue  %s %s, the next step of %s" % (
            verb, entry["next_id"], entry["next_task"], entry["task_id"]))
    for entry in outcome.locks:
        click.echo("%sfree lock %s (run %s): %s" % (
            verb, entry["lock"], entry["run_id"] or "-", entry["reason"]))
    click.echo("%s%d requeued, %d parked, %d settled, %d lock(s) freed%s" % (
        "dry run: " if dry_run else "", len(outcome.requeued),
        len(outcome.parked), len(outcome.settled), len(outcome.locks),
        "" if outcome.dead else "; no dead holder"))


@click.command(short_help="Requeue dead consumers' tasks and free their locks.")
@settings_options(only=QUEUE_SETTINGS + LEASE_SETTINGS)
@click.option("--dry-run", is_flag=True,
              help="Show what would be moved and freed; change nothing.")
def recover_command(settings, dry_run):
    """Put the tasks of dead consumers back on the queue and free their locks.

    Consumers do this on their own at start and at every health check; run
    it by hand when none is running. Tasks of live consumers and locks of
    live holders are never touched.

    \b
    Examples:
        hueyscope recover --dry-run
        hueyscope recover --queue /var/lib/app/queue.db --app app.tasks:huey
    """
    from hueyscope.apps import open_app

    # The configured delivery says how the queue is used: an at-most-once
    # queue has no leases, and building a leased queue on it would add them.
    if settings.delivery != "at-least-once":
        raise BadInput("recover needs at-least-once delivery (not %s)"
                       % settings.delivery)
    # A dry run records nothing, so it does not need the event store.
    huey = open_app(settings, events=not dry_run)
    others = operations.other_queues(huey)
    if not dry_run:
        import hueyscope

        for each in [huey] + [other for _, other in others]:
            hueyscope.attach(each, events=settings.events)
    done = operations.recover(huey, others, dry_run=dry_run,
                              lease_timeout=settings.lease_timeout,
                              max_recoveries=settings.max_recoveries,
                              keep_failed=settings.keep_failed)
    for name, outcome in done.queues:
        if len(done.queues) > 1:
            click.echo("queue %s:" % name)
        echo_outcome(outcome, dry_run)
