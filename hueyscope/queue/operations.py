"""What can be done to a queue by hand: one function per operation.

``retry``, ``discard``, ``revoke``, ``restore``, ``cancel``, ``pause``,
``resume`` and ``recover`` act on an open Huey; ``failed``, ``paused``
and ``status`` read one. Each takes ids or filters,
returns what it did as a plain value (with ``dry_run``: what it would do)
and raises ``ValueError`` with a one-line message for bad input. The
command line (:mod:`hueyscope.commands`) is one caller; anything else that
acts on a queue (a browser console) is another, and gets the same checks
and the same records.

What happens is recorded as it always was: through the Huey's signals
(``requeued``, ``revoke``, ``restore``, ``pause``, ``resume``,
``recovered``, ``lost``), which the
recorder attached to it (``hueyscope.attach``) writes to the event store.
``actor``, where accepted, says who asked: it is added to the reason of the
event recorded, and changes nothing else.
"""
import dataclasses

from hueyscope.queue import failed as failed_set
from hueyscope.queue import recovery
from hueyscope.settings import DEFAULT_LEASE_TIMEOUT, DEFAULT_MAX_RECOVERIES


@dataclasses.dataclass
class Done:
    """What an operation did to a queue, or with ``dry_run`` would do.

    ``touched``: a dict per item acted on -- failed-set entries for retry
    and discard, ``{"task_id", "task"}`` for revoke and restore (``task_id``
    None for every task of the name).
    """

    action: str
    queue: str
    touched: list = dataclasses.field(default_factory=list)
    dry_run: bool = False

    @property
    def count(self):
        return len(self.touched)


@dataclasses.dataclass
class Recovered:
    """What ``recover`` did (or would do): a :class:`~hueyscope.queue.recovery.Outcome`
    per queue, the queue asked for first."""

    queues: list = dataclasses.field(default_factory=list)  # [(name, Outcome)]
    dry_run: bool = False


# -- the failed set ---------------------------------------------------------

def _keeps_failed_set(huey):
    if not getattr(huey.storage, "leased", False):
        raise ValueError("queue %s keeps no failed set: it is not leased "
                         "(Redis, or at-most-once delivery)" % huey.name)


def failed(huey, task=None, fingerprint=None, since=None, kind=None):
    """The failed-set entries of ``huey``'s queue matching every filter, oldest first.

    ``task``: module.function or the function's name; ``fingerprint``: the
    error's, as the report groups failures; ``since``: seconds since it was
    parked; ``kind``: failed, lost or dropped.
    """
    _keeps_failed_set(huey)
    _check_kind(kind)
    return failed_set.select(huey, (), task, fingerprint, since, kind)


def _check_kind(kind):
    if kind is not None and kind not in failed_set.KINDS:
        raise ValueError("no kind %r of failed-set entry (%s)" % (
            kind, ", ".join(failed_set.KINDS)))


def _chosen(huey, ids, task, fingerprint, since, kind):
    """The entries named by ``ids`` and filters; every id must be there."""
    _keeps_failed_set(huey)
    _check_kind(kind)
    if not (ids or task or fingerprint or since or kind):
        raise ValueError("name the entries: IDs, --task, --fingerprint, "
                         "--since or --kind (see hueyscope failed)")
    entries = failed_set.select(huey, ids, task, fingerprint, since, kind,
                                with_data=True)
    missing = sorted(set(ids) - {e["id"] for e in entries})
    if missing:
        raise ValueError("no failed-set entr%s %s in queue %s" % (
            "y" if len(missing) == 1 else "ies",
            ", ".join(map(str, missing)), huey.name))
    return entries


def retry(huey, ids=(), task=None, fingerprint=None, since=None, kind=None,
          dry_run=False, actor=None):
    """Put failed-set entries back on the queue: a new attempt series each.

    Entries are named by ``ids`` and/or filters (as :func:`failed`); each
    task gets its declared retries back and is recorded as ``requeued``.
    """
    entries = _chosen(huey, ids, task, fingerprint, since, kind)
    if not dry_run:
        failed_set.retry(huey, entries, actor=actor)
    return Done("retry", huey.name, entries, dry_run)


def discard(huey, ids=(), task=None, fingerprint=None, since=None, kind=None,
            dry_run=False, actor=None):
    """Delete failed-set entries for good, named as for :func:`retry`.

    Each is recorded as a ``discard`` event of its task (its status stays
    what it was), naming ``actor`` when given.
    """
    entries = _chosen(huey, ids, task, fingerprint, since, kind)
    if not dry_run:
        failed_set.discard(huey, entries)
        for entry in entries:
            if entry["task_id"] is None:
                continue  # a message nobody could read: no task to speak of
            subject = _ById(entry["task_id"])
            subject.name = entry["task"]
            huey._emit("discard", subject, exc=_Note(failed_set.by_whom(
                "discarded from the failed set (%s, entry %d)" % (
                    entry["kind"], entry["id"]), actor)))
    return Done("discard", huey.name, entries, dry_run)


# -- revocations -------------------------------------------------------------

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


class _ById(_ByName):
    def __init__(self, task_id):
        super().__init__(None)
        self.id = task_id


def check_named(ids, task):
    """Raise ValueError unless exactly one of task ``ids`` and ``task`` is given.

    :func:`revoke` and :func:`restore` check this first; a caller can check
    it before it opens the queue.
    """
    if bool(ids) == bool(task):
        raise ValueError("give task IDS or --task NAME, not %s" % (
            "both" if ids else "neither"))


def _task_class(huey, name):
    """The task class called ``name`` (module.function, or function alone)."""
    registry = huey._registry._registry
    if name in registry:
        return registry[name]
    matches = [cls for key, cls in registry.items()
               if key.rsplit(".", 1)[-1] == name]
    if len(matches) != 1:
        known = ", ".join(sorted(k.rsplit(".", 1)[-1] for k in registry))
        raise ValueError("no task %r in %s (%s)" % (
            name, huey.name, "ambiguous" if matches else "known: " + known))
    return matches[0]


def _revocation(huey, action, ids, task, actor):
    check_named(ids, task)
    if task:
        cls = _task_class(huey, task)
        getattr(huey, action + "_all")(cls)
        subjects = [_ByName(huey._registry.task_to_string(cls))]
    else:
        for task_id in ids:
            getattr(huey, action + "_by_id")(task_id)
        subjects = [_ById(task_id) for task_id in ids]
    for subject in subjects:
        huey._emit(action, subject, exc=_Note(failed_set.by_whom(
            "%s by hand (%s)" % (action, "every task of the name"
                                 if subject.id is None else "this task"), actor)))
    return Done(action, huey.name,
                [{"task_id": s.id, "task": s.name} for s in subjects])


def revoke(huey, ids=(), task=None, actor=None):
    """Revoke tasks: by ``ids`` each is skipped once (huey's revoke_by_id);
    ``task`` (a name) every task of it until restored. Recorded as ``revoke``."""
    return _revocation(huey, "revoke", ids, task, actor)


def restore(huey, ids=(), task=None, actor=None):
    """Undo :func:`revoke` for task ``ids`` or every task of ``task``.
    Recorded as ``restore``."""
    return _revocation(huey, "restore", ids, task, actor)


# -- cancel ------------------------------------------------------------------

def cancel(huey, ids=(), task=None, dry_run=False, actor=None):
    """Stop tasks: a pending or scheduled one is revoked, a running one stopped.

    Named by ``ids`` or by ``task`` (every pending, scheduled and running
    task of the name). Every id must be pending, scheduled or running, and
    a name must have one such task, else ValueError and nothing changes.
    Each task is revoked by id (huey's revoke_by_id, recorded ``revoke``):
    a pending one is skipped when a worker takes it, and a running one that
    recovery puts back after a crash is never run again. A running one is
    also stopped by the consumer that holds it (a ``hueyscope_cancel``
    request, see :mod:`hueyscope.consumer.control`), recorded ``canceled``
    with ``actor`` in its reason. ``touched``: ``{"task_id", "task",
    "state"}`` per task.
    """
    from hueyscope.queue import cancels

    check_named(ids, task)
    found = cancels.find(huey)
    if task:
        name = huey._registry.task_to_string(_task_class(huey, task))
        chosen = [item for item in found if item.task == name]
        if not chosen:
            raise ValueError("no pending, scheduled or running task %s in "
                             "queue %s" % (task, huey.name))
    else:
        by_id = {}
        for item in found:
            if item.state == "running" or item.task_id not in by_id:
                by_id[item.task_id] = item
        missing = [task_id for task_id in ids if task_id not in by_id]
        if missing:
            raise ValueError("no pending, scheduled or running task %s in queue "
                             "%s (unknown, or finished already)" % (
                                 ", ".join(missing), huey.name))
        chosen = [by_id[task_id] for task_id in dict.fromkeys(ids)]
    touched = [{"task_id": item.task_id, "task": item.task.rsplit(".", 1)[-1],
                "state": item.state} for item in chosen]
    if dry_run:
        return Done("cancel", huey.name, touched, dry_run)
    reason = failed_set.by_whom("canceled by hand", actor)
    for item in chosen:
        huey.revoke_by_id(item.task_id)
        subject = _ById(item.task_id)
        subject.name = item.task.rsplit(".", 1)[-1]
        huey._emit("revoke", subject, exc=_Note(reason))
    cancels.request(huey, [item for item in chosen if item.state == "running"],
                    reason)
    return Done("cancel", huey.name, touched, dry_run)


# -- pauses ------------------------------------------------------------------

def _controls(huey, what):
    if not getattr(huey.storage, "leased", False):
        raise ValueError("queue %s cannot %s: it is not leased (Redis, or "
                         "at-most-once delivery)" % (huey.name, what))


def _pause_names(huey, tasks, every):
    """The names ``--task`` and ``--all`` pick, as messages name their task."""
    from hueyscope.queue.control import ALL

    if bool(tasks) == bool(every):
        raise ValueError("give --task NAME or --all, not %s" % (
            "both" if tasks else "neither"))
    if every:
        return [ALL]
    return [huey._registry.task_to_string(_task_class(huey, name))
            for name in tasks]


def paused(huey):
    """The pauses of ``huey``'s queue: [{"task", "paused", "actor"}]
    (``task`` ``*``: the whole queue)."""
    from hueyscope.queue import control

    _controls(huey, "be paused")
    return control.paused(huey.storage)


def pause(huey, tasks=(), every=False, dry_run=False, actor=None):
    """Pause every task named in ``tasks`` (or, ``every``, the whole queue).

    Consumers stop taking their messages, which stay queued in order,
    until :func:`resume`; the pause is a row of the queue, so it outlives
    any consumer. ``touched``: ``{"task_id": None, "task"}`` per name not
    paused before (``*`` for the whole queue). Recorded as ``pause``.
    """
    from hueyscope.queue import control

    _controls(huey, "be paused")
    names = _pause_names(huey, tasks, every)
    if dry_run:
        before = {p["task"] for p in control.paused(huey.storage)}
        added = [name for name in names if name not in before]
    else:
        added = control.pause(huey.storage, names, actor)
        _note(huey, "pause", added, actor)
    return Done("pause", huey.name, [{"task_id": None, "task": name}
                                      for name in added], dry_run)


def resume(huey, tasks=(), every=False, dry_run=False, actor=None):
    """Undo :func:`pause` for ``tasks`` or (``every``) the whole queue.

    A name that is not paused is bad input and nothing changes. A name no
    longer in the app may be given as messages name it (module.function).
    Recorded as ``resume``.
    """
    from hueyscope.queue import control

    _controls(huey, "be resumed")
    now = {p["task"] for p in control.paused(huey.storage)}
    if bool(tasks) == bool(every):
        raise ValueError("give --task NAME or --all, not %s" % (
            "both" if tasks else "neither"))
    names = [control.ALL] if every else [
        name if name in now else _pause_names(huey, [name], False)[0]
        for name in tasks]
    missing = [name for name in names if name not in now]
    if missing:
        raise ValueError("%s not paused in queue %s (paused: %s)" % (
            ", ".join("the queue" if n == control.ALL else "task %s" % n
                      for n in missing), huey.name,
            ", ".join(sorted(now)) or "none"))
    if not dry_run:
        control.resume(huey.storage, names)
        _note(huey, "resume", names, actor)
    return Done("resume", huey.name, [{"task_id": None, "task": name}
                                       for name in names], dry_run)


def _note(huey, action, names, actor):
    """Record a pause or resume of each name, as revocations are."""
    for name in names:
        huey._emit(action, _ByName(name), exc=_Note(failed_set.by_whom(
            "%s by hand (%s)" % (action, "the whole queue" if name == "*"
                                 else "every task of the name"), actor)))


# -- recovery and status ----------------------------------------------------

def recover(huey, others=(), dry_run=False, lease_timeout=DEFAULT_LEASE_TIMEOUT,
            max_recoveries=DEFAULT_MAX_RECOVERIES, keep_failed=None, actor=None):
    """Put dead holders' leases back on the queue and free their locks.

    ``others``: more Hueys to recover, as ``(name, huey)`` (see
    :func:`other_queues`). With ``dry_run`` nothing changes and nothing is
    recorded; otherwise ``recovered`` and ``lost`` are emitted through each
    Huey. See :func:`hueyscope.queue.recovery.recover`.
    """
    done = Recovered(dry_run=dry_run)
    for name, each in [(huey.name, huey)] + list(others):
        done.queues.append((name, recovery.recover(
            each, dry_run=dry_run, lease_timeout=lease_timeout,
            max_recoveries=max_recoveries, keep_failed=keep_failed,
            actor=actor)))
    return done


def other_queues(huey):
    """[(name, Huey)] for the other queues of a SQLite file holding leases or locks.

    One file can hold the queues of several apps; their messages are in it,
    and recovery needs no app to put them back (a pipeline's next step is
    built from its message), so a recovery without an app can recover
    every queue of the file. The Hueys have no recorder attached.
    """
    from hueyscope.queue.sqlite import LeasedSqliteStorage, SqliteHuey

    storage = huey.storage
    if not isinstance(storage, LeasedSqliteStorage):
        return []
    with storage.db() as curs:
        names = [row[0] for row in curs.execute(
            "select queue from hueyscope_lease union "
            "select queue from hueyscope_lock order by 1")]
    return [(name, SqliteHuey(name, filename=storage.filename))
            for name in names if name != huey.name]


def status(queue, lease_timeout=DEFAULT_LEASE_TIMEOUT):
    """{queue name: what is in it} (see :mod:`hueyscope.queue.view`).

    ``queue``: a Huey, or the path of a SQLite queue file, read directly
    without writing to it (no app needed).
    """
    from hueyscope.queue.view import huey_status, sqlite_status

    if hasattr(queue, "storage"):
        return huey_status(queue, lease_timeout)
    return sqlite_status(queue, lease_timeout)
