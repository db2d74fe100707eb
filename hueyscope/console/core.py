"""The console's hold on one queue: its Huey, opened once, and the actions on it.

Everything that touches the queue runs on one thread of its own (huey's
storages keep a connection per thread, and the web server must not wait on
a busy queue), through :meth:`Console.call`. Actions are
:mod:`hueyscope.queue.operations`, the same code as the command line, with
the Huey's recorder attached, so each is recorded in the event store as it
is when typed in a shell.
"""
import asyncio
import concurrent.futures
import os
import threading

from hueyscope.queue import operations
from hueyscope.settings import Settings, parse_duration

OPERATE = "hueyscope-operate"
ACTIONS = ("retry", "discard", "revoke", "restore", "recover", "cancel",
           "pause", "resume")
BULK = ("retry", "discard")  # actions on failed-set entries
SETTINGS_USED = ("queue", "events", "app", "durability", "delivery",
                 "lease_timeout", "max_recoveries", "keep_failed")


class Console:
    """One queue, opened lazily through its app, with the recorder attached."""

    def __init__(self, settings, store=None):
        self.settings = settings
        self.store = store  # the name of the Datasette database of the event store
        self._huey = None
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="hueyscope-console")

    @classmethod
    def from_config(cls, config):
        """A Console from plugin configuration, or None if no queue is named.

        ``config`` keys: ``queue``, ``app``, ``events`` (the settings of the
        same names; HUEYSCOPE_* variables fill in the rest) and ``database``
        (the Datasette database of the event store).
        """
        config = config or {}
        if "queue" in config and not config["queue"]:
            return None  # hueyscope browse without --queue
        flags = {k: config.get(k) for k in SETTINGS_USED if config.get(k) is not None}
        if not flags.get("queue") and not os.environ.get("HUEYSCOPE_QUEUE"):
            return None
        return cls(Settings.build(only=SETTINGS_USED, **flags), config.get("database"))

    def huey(self):
        """The queue's Huey, opened on first use (raises ValueError, one line)."""
        with self._lock:
            if self._huey is None:
                import hueyscope
                from hueyscope.apps import open_app

                huey = open_app(self.settings, events=True)
                hueyscope.attach(huey, events=self.settings.events)
                self._huey = huey
            return self._huey

    async def call(self, fn, *args, **kwargs):
        """``fn(huey, *args, **kwargs)`` on the console's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: fn(self.huey(), *args, **kwargs))

    def open_now(self):
        """Open the queue here and now (``hueyscope browse`` does, to fail early)."""
        return self._pool.submit(self.huey).result()

    # -- actions -------------------------------------------------------------

    def act(self, huey, action, params, actor, dry_run=False):
        """Run ``action`` with ``params`` (see :func:`parse_params`); a JSON-able dict."""
        if action in BULK:
            fn = getattr(operations, action)
            done = fn(huey, params["ids"], params["task"], params["fingerprint"],
                      params["since"], params["kind"], dry_run=dry_run, actor=actor)
            return done_value(done)
        if action in ("revoke", "restore"):
            if dry_run:
                raise ValueError("%s has no dry run: it is undone by %s" % (
                    action, "restore" if action == "revoke" else "revoke"))
            fn = getattr(operations, action)
            return done_value(fn(huey, params["ids"], params["task"], actor=actor))
        if action == "cancel":
            return self.cancel(huey, params, actor, dry_run)
        if action in ("pause", "resume"):
            # A task name, or "*" for the whole queue.
            every = params["task"] == "*"
            tasks = [params["task"]] if params["task"] and not every else []
            fn = getattr(operations, action)
            return done_value(fn(huey, tasks, every=every, dry_run=dry_run,
                                 actor=actor))
        if action == "recover":
            s = self.settings
            done = operations.recover(
                huey, dry_run=dry_run, lease_timeout=s.lease_timeout,
                max_recoveries=s.max_recoveries, keep_failed=s.keep_failed,
                actor=actor)
            return recovered_value(done)
        raise ValueError("no action %r (%s)" % (action, ", ".join(ACTIONS)))

    def cancel(self, huey, params, actor, dry_run):
        """:func:`hueyscope.queue.operations.cancel` of task ids or a task name.

        With ``params["previewed"]`` (the confirmation of a preview, whose
        ids travel in its form) the tasks that finished since the preview
        are left out rather than failing the rest; otherwise every id must
        be pending, scheduled or running, as on the command line.
        """
        ids = params["ids"]
        if params.get("previewed") and ids and not params["task"]:
            from hueyscope.queue import cancels

            there = {item.task_id for item in cancels.find(huey)}
            ids = [task_id for task_id in ids if task_id in there]
            if not ids:
                return {"action": "cancel", "queue": huey.name,
                        "dry_run": dry_run, "count": 0, "touched": []}
        return done_value(operations.cancel(huey, ids, params["task"],
                                            dry_run=dry_run, actor=actor))


def parse_params(action, values):
    """The filters of an action from a form or a JSON body (a dict of values).

    ``ids``: a list (or one comma- or space-separated string) of failed-set
    entry ids for retry and discard, of task ids for revoke, restore and cancel;
    ``since``: seconds or a duration such as 1h; ``previewed`` (cancel):
    the ids are those a preview listed. Raises ValueError.
    """
    ids = values.get("ids") or []
    if isinstance(ids, str):
        ids = ids.replace(",", " ").split()
    if not isinstance(ids, list):
        raise ValueError("ids must be a list")
    if action in BULK:
        try:
            ids = [int(i) for i in ids]
        except (TypeError, ValueError):
            raise ValueError("failed-set entry ids are whole numbers")
    else:
        ids = [str(i) for i in ids]
    since = values.get("since")
    if since in ("", None):
        since = None
    elif isinstance(since, (int, float)) and not isinstance(since, bool):
        since = float(since)
    else:
        since = parse_duration(str(since))
    text = {k: (values.get(k) or None) for k in ("task", "fingerprint", "kind")}
    for key, value in text.items():
        if value is not None and not isinstance(value, str):
            raise ValueError("%s must be text" % key)
    params = dict(text, ids=ids, since=since)
    if action == "cancel":
        params["previewed"] = str(values.get("previewed", "")).lower() in (
            "1", "true", "yes", "on")
    return params


def _entry(entry):
    # The message itself is the queue's business, not the page's.
    return {k: v for k, v in entry.items() if k != "data"}


def done_value(done):
    return {"action": done.action, "queue": done.queue, "dry_run": done.dry_run,
            "count": done.count, "touched": [_entry(e) for e in done.touched]}


def _holder(h, reason):
    return {"holder": h.id, "host": h.hostname, "pid": h.pid, "run_id": h.run_id,
            "reason": reason}


def recovered_value(done):
    queues = []
    for name, outcome in done.queues:
        queues.append({
            "queue": name,
            "dead": [_holder(h, reason) for h, reason in outcome.dead],
            "requeued": [_entry(e) for e in outcome.requeued],
            "parked": [_entry(e) for e in outcome.parked],
            "settled": [_entry(e) for e in outcome.settled],
            "locks": [_entry(e) for e in outcome.locks],
        })
    first = queues[0] if queues else {}
    count = sum(len(first.get(k, ())) for k in ("requeued", "parked", "settled"))
    return {"action": "recover", "dry_run": done.dry_run, "count": count,
            "queues": queues}
