"""``hueyscope cancel``: stop tasks, whether they wait or run.

What it does is :func:`hueyscope.queue.operations.cancel`; how a consumer
stops a running task is told in :mod:`hueyscope.consumer.control`.
"""
import click

from hueyscope.options import settings_options
from hueyscope.queue import operations


def actor():
    """Who runs this command: user@host, as the record of a cancel says."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no user name for this uid (a container)
        import os

        user = "uid %d" % os.getuid()
    return "%s@%s" % (user, socket.gethostname())


@click.command(short_help="Stop tasks: revoke waiting ones, stop running ones.")
@click.argument("ids", nargs=-1)
@click.option("--task", default=None,
              help="Every pending, scheduled and running task of this name "
                   "(module.function, or the function's name).")
@click.option("--dry-run", is_flag=True,
              help="Say what would be canceled; change nothing.")
@settings_options(only=("queue", "events", "app", "durability", "delivery"))
def cancel_command(settings, ids, task, dry_run):
    """Cancel tasks by IDS, or every task of --task NAME.

    A pending or scheduled task is revoked: no worker runs it. A running
    task is stopped by the consumer that holds it, within about a second
    (see the Control page of the docs): its worker thread or process gets
    an exception at its next bytecode, or the task stops by itself when it
    checks hueyscope.cancelled(). It is recorded canceled, with who asked,
    and never run again. An id that is not pending, scheduled or running
    (unknown, or finished) is an error, and nothing is canceled.
    """
    operations.check_named(ids, task)  # before the queue is opened
    import hueyscope
    from hueyscope.apps import open_app

    huey = open_app(settings)
    hueyscope.attach(huey, events=settings.events)
    done = operations.cancel(huey, ids, task, dry_run=dry_run, actor=actor())
    verb = "would cancel" if dry_run else "canceled"
    for item in done.touched:
        state = item["state"]
        if state == "running" and not dry_run:
            state = "running: its consumer stops it"
        click.echo("%s %s %s (%s)" % (verb, item["task"], item["task_id"], state))
