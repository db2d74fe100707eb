"""``hueyscope revoke`` and ``restore``: huey's revocations from the command line, on record.

huey revokes a task by id (``revoke_by_id``: its next execution is skipped,
once) or every task of a name (``revoke_all``: until restored), and emits no
signal when it does: only the consumer's ``revoked`` later says so. These
commands record the request itself, as a ``revoke`` or ``restore`` event
(the task's status stays what it is). A revocation of a whole task name is
recorded under the name, with no task id. What they do is
:func:`hueyscope.queue.operations.revoke` and ``restore``.
"""
import click

from hueyscope.queue import operations


def _open(settings):
    import hueyscope
    from hueyscope.apps import open_app

    huey = open_app(settings)
    hueyscope.attach(huey, events=settings.events)
    return huey


def _options(fn):
    from hueyscope.options import settings_options

    fn = click.option("--task", default=None,
                      help="Every task of this name (module.function, or the "
                           "function's name), until restored.")(fn)
    fn = click.argument("ids", nargs=-1)(fn)
    return settings_options(only=("queue", "events", "app", "durability",
                                  "delivery"))(fn)


def _apply(settings, ids, task, operation):
    operations.check_named(ids, task)  # before the queue is opened
    return operation(_open(settings), ids, task)


def _subject(item):
    return item["task_id"] or "every %s" % item["task"]


@click.command(short_help="Revoke tasks by id, or every task of a name.")
@_options
def revoke_command(settings, ids, task):
    """Revoke tasks: a consumer skips them instead of running them.

    By IDS, each is skipped once (huey's revoke_by_id); with --task, every
    task of that name is skipped until restored. The request is recorded in
    the event store as a revoke event; the consumer records revoked when it
    skips the task.
    """
    for item in _apply(settings, ids, task, operations.revoke).touched:
        click.echo("revoked %s" % _subject(item))


@click.command(short_help="Undo a revoke.")
@_options
def restore_command(settings, ids, task):
    """Undo hueyscope revoke, for task IDS or every task of --task NAME."""
    for item in _apply(settings, ids, task, operations.restore).touched:
        click.echo("restored %s" % _subject(item))
