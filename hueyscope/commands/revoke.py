"""``hueyscope revoke`` and ``restore``: huey's revocations from the command line, on record.

huey revokes a task by id (``revoke_by_id``: its next execution is skipped,
once) or every task of a name (``revoke_all``: until restored), and emits no
signal when it does: only the consumer's ``revoked`` later says so. These
commands record the request itself, as a ``revoke`` or ``restore`` event
(the task's status stays what it is). A revocation of a whole task name is
recorded under the name, with no task id.
"""
import click

from hueyscope.options import BadInput


class _Note(Exception):
    """What was asked (the error text of a revoke or restore event)."""


class _ByName:
    """What the recorder needs of a revocation of every task of a name."""

    id = None
    retries = priority = eta = None
    args, kwargs = (), {}
    on_complete = on_error = None

    def __init__(self, name):
        self.name = name


def _task_class(huey, name):
    """The task class called ``name`` (module.function, or function alone)."""
    registry = huey._registry._registry
    if name in registry:
        return registry[name]
    matches = [cls for key, cls in registry.items()
               if key.rsplit(".", 1)[-1] == name]
    if len(matches) != 1:
        known = ", ".join(sorted(k.rsplit(".", 1)[-1] for k in registry))
        raise BadInput("no task %r in %s (%s)" % (
            name, huey.name, "ambiguous" if matches else "known: " + known))
    return matches[0]


def _open(settings):
    import hueyscope
    from hueyscope.apps import open_app

    try:
        huey = open_app(settings)
    except ValueError as exc:
        raise BadInput(str(exc))
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


def _apply(settings, ids, task, action):
    if bool(ids) == bool(task):
        raise BadInput("give task IDS or --task NAME, not %s" % (
            "both" if ids else "neither"))
    huey = _open(settings)
    if task:
        cls = _task_class(huey, task)
        getattr(huey, action + "_all")(cls)
        subjects = [_ByName(huey._registry.task_to_string(cls))]
    else:
        for task_id in ids:
            getattr(huey, action + "_by_id")(task_id)
        subjects = [_ById(task_id) for task_id in ids]
    for subject in subjects:
        huey._emit(action, subject, exc=_Note(
            "%s by hand (%s)" % (action, "every task of the name"
                                 if subject.id is None else "this task")))
    return huey, subjects


class _ById(_ByName):
    def __init__(self, task_id):
        super().__init__(None)
        self.id = task_id


@click.command(short_help="Revoke tasks by id, or every task of a name.")
@_options
def revoke_command(settings, ids, task):
    """Revoke tasks: a consumer skips them instead of running them.

    By IDS, each is skipped once (huey's revoke_by_id); with --task, every
    task of that name is skipped until restored. The request is recorded in
    the event store as a revoke event; the consumer records revoked when it
    skips the task.
    """
    huey, subjects = _apply(settings, ids, task, "revoke")
    for s in subjects:
        click.echo("revoked %s" % (s.id or "every %s" % s.name))


@click.command(short_help="Undo a revoke.")
@_options
def restore_command(settings, ids, task):
    """Undo hueyscope revoke, for task IDS or every task of --task NAME."""
    huey, subjects = _apply(settings, ids, task, "restore")
    for s in subjects:
        click.echo("restored %s" % (s.id or "every %s" % s.name))
