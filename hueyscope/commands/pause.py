"""``hueyscope pause`` and ``resume``: hold back a task name or a whole queue.

What they do is :func:`hueyscope.queue.operations.pause` and ``resume``
(see :mod:`hueyscope.queue.control`); each is recorded in the event store
as a ``pause`` or ``resume`` event under the task's name.
"""
import click

from hueyscope.queue import operations


def _options(fn):
    from hueyscope.options import settings_options

    fn = click.option("--dry-run", is_flag=True,
                      help="Show what would change; change nothing.")(fn)
    fn = click.option("--all", "every", is_flag=True,
                      help="Every task of the queue.")(fn)
    fn = click.option("--task", "tasks", multiple=True, metavar="NAME",
                      help="A task name (module.function, or the function's "
                           "name); may be repeated.")(fn)
    return settings_options(only=("queue", "events", "app", "durability",
                                  "delivery"))(fn)


def _run(settings, tasks, every, dry_run, operation):
    import hueyscope
    from hueyscope.apps import open_app

    if bool(tasks) == bool(every):  # before the queue is opened
        raise ValueError("give --task NAME or --all, not %s" % (
            "both" if tasks else "neither"))
    huey = open_app(settings, events=not dry_run)
    if not dry_run:
        hueyscope.attach(huey, events=settings.events)
    done = operation(huey, tasks, every, dry_run=dry_run)
    verb = ("would %s" if dry_run else "%sd") % done.action
    for item in done.touched:
        click.echo("%s %s" % (verb, "the whole queue" if item["task"] == "*"
                              else item["task"]))
    if not done.touched:
        click.echo("nothing to change: already %sd" % done.action)


@click.command(short_help="Stop consumers taking a task name, or any task.")
@_options
def pause_command(settings, tasks, every, dry_run):
    """Pause task names (--task NAME, repeatable) or the whole queue (--all).

    Consumers stop taking their tasks, which stay queued in their order and
    are taken again after hueyscope resume; tasks already running finish.
    The pause is kept in the queue itself, so it outlives consumer
    restarts. It shows in hueyscope status, in metrics and in alerts, and
    is recorded in the event store as a pause event.
    """
    _run(settings, tasks, every, dry_run, operations.pause)


@click.command(short_help="Undo a pause.")
@_options
def resume_command(settings, tasks, every, dry_run):
    """Resume task names (--task NAME) or the whole queue (--all) paused by
    hueyscope pause. A name that is not paused is an error."""
    _run(settings, tasks, every, dry_run, operations.resume)
