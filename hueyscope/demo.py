"""``hueyscope demo``: every behaviour of the demo catalogue, end to end.

The demo runs in a fresh folder. This process is the producer; the
consumer (4 thread workers) runs embedded in a thread of the same process --
the notebook recipe that huey 3.5.4 breaks, working. Each step enqueues work,
waits for it, then reads back from the event store what the consumer did,
so the output shows both sides. The demo checks every behaviour it shows and
exits 1 if one did not happen as expected.
"""
import datetime
import logging
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path

import click

from hueyscope.options import CAPTURE_FIELDS, BadInput, Path as PathType, capture_options
from hueyscope.readonly import sqlite_uri
from hueyscope.settings import Settings

MARKER = ".hueyscope-demo"
WORKERS = 4
STOP_TIMEOUT = 30.0


class Demo:
    """The state of one demo run: its folder, clock, and the checks it made."""

    def __init__(self, folder, queue=None, **capture):
        """``capture``: the :data:`hueyscope.options.CAPTURE_FIELDS` flags.

        ``queue``: a postgresql:// URL instead of the folder's queue.db.
        """
        self.folder = Path(folder)
        # Its own files and the demo catalogue, whatever the environment
        # says of the queue, the app or its delivery.
        self.settings = Settings.build(
            only=("queue", "events", "site", *CAPTURE_FIELDS),
            queue=queue or str(self.folder / "queue.db"),
            events=str(self.folder / "events.db"),
            site=str(self.folder / "site"), **capture)
        self.t0 = time.monotonic()
        self.failures = []
        self.huey = self.tasks = self.recorder = self.consumer = None
        self.thread = None

    # -- output ---------------------------------------------------------

    def elapsed(self):
        return time.monotonic() - self.t0

    def title(self, text):
        click.echo("")
        click.secho("%s  [%5.1fs]" % (text, self.elapsed()), bold=True)

    def say(self, side, text):
        click.echo("  %-10s %s" % ("[%s]" % side if side else "", text))

    def check(self, ok, text):
        """Print a check; remember it if it failed."""
        if ok:
            click.echo("  %-10s ok: %s" % ("", text))
        else:
            click.secho("  %-10s UNEXPECTED: %s" % ("", text), fg="red")
            self.failures.append(text)
        return ok

    # -- the event store, as the consumer recorded it -----------------------

    def events(self, sql, params=()):
        """Rows from events.db, after flushing what this process buffered."""
        self.recorder.flush()
        conn = sqlite3.connect(sqlite_uri(self.settings.events, "mode=ro"),
                               uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def signals_of(self, task_id):
        return self.events(
            "select signal, attempt, ts, worker from events where task_id = ? "
            "order by ts, id", (task_id,))

    def wait_signal(self, task_id, signal, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s == signal for s, *_ in self.signals_of(task_id)):
                return True
            time.sleep(0.1)
        return False

    def at(self, ts):
        """A unix time as seconds since the demo started."""
        return "+%.2fs" % (ts - self.wall0)

    # -- steps ------------------------------------------------------------

    def setup(self):
        from hueyscope.apps import open_app  # it exports the settings first

        self.huey = open_app(self.settings)
        if self.settings.queue_scheme != "sqlite":
            claim_server_queue(self.huey)
        from hueyscope import demo_tasks

        self.tasks = demo_tasks
        self.recorder = demo_tasks.recorder
        self.wall0 = time.time() - self.elapsed()

    def start_consumer(self):
        from hueyscope.consumer.runner import Consumer

        self.consumer = Consumer(
            self.huey, recorder=self.recorder, app=self.settings.app,
            sample_interval=1.0, workers=WORKERS, periodic=True,
            initial_delay=0.05, max_delay=0.5, health_check_interval=2.0)
        self.thread = threading.Thread(
            target=self.consumer.run, name="consumer", daemon=True)
        self.thread.start()
        self.consumer.started.wait(10)
        self.say("consumer", "started: %d thread workers, periodic tasks on, "
                 "health checks every 2 s, running in a thread of this "
                 "process (no signal handlers needed)" % WORKERS)

    def result(self, handle, timeout=20.0):
        from hueyscope.producer.scenarios import wait_for

        return wait_for(self.huey, handle.id, time.monotonic() + timeout)

    def priorities(self):
        from hueyscope.producer.scenarios import mixed

        self.title("1. Priorities order a mixed queue")
        submitted = mixed(self.tasks, 1)
        self.say("producer", "enqueued %d tasks before any consumer runs:"
                 % len(submitted))
        for item in submitted:
            self.say("", "  %-36s priority %3d" % (item.label, item.priority))
        self.start_consumer()
        ids = [item.task_ids[0] for item in submitted]
        for task_id in ids:
            self.result(_Handle(task_id))
        started = dict((task_id, (ts, worker)) for task_id, ts, worker in self.events(
            "select task_id, ts, worker from events where signal = 'executing' "
            "and attempt = 1 and task_id in (%s)" % ",".join("?" * len(ids)), ids))
        taken = [e for e in self.consumer.taken.in_order() if e[2] in started]
        self.say("consumer", "took them off the queue in this order:")
        for seq, _, task_id, name, priority in taken:
            ts, worker = started[task_id]
            self.say("", "  %d. %-22s priority %3d  started %s on %s" % (
                seq, name, priority or 0, self.at(ts), worker))
        priorities = [e[4] or 0 for e in taken]
        self.check(len(taken) == len(ids) and
                   priorities == sorted(priorities, reverse=True),
                   "highest priority first, whatever the enqueue order")

    def flaky(self):
        self.title("2. A flaky call is retried (retries=3, retry_delay=1)")
        handle = self.tasks.flaky_network_call(fail_times=2)
        self.say("producer", "flaky_network_call(fail_times=2): fails twice, "
                 "then succeeds")
        outcome = self.result(handle)
        self.wait_signal(handle.id, "complete")
        for signal, attempt, ts, worker in self.signals_of(handle.id):
            if signal in ("error", "complete"):
                self.say("consumer", "attempt %d  %-8s at %s" % (
                    attempt, signal, self.at(ts)))
        self.say("producer", "result: %r" % (outcome.value,))
        self.check(outcome.status == "complete" and outcome.value["attempt"] == 3,
                   "succeeded on attempt 3 after 2 retries")

    def pi(self):
        self.title("3. A CPU task that knows its own task id (context=True)")
        handle = self.tasks.cpu_pi_estimate(samples=200_000, seed=1)
        outcome = self.result(handle)
        value = outcome.value or {}
        self.say("producer", "enqueued cpu_pi_estimate, task id %s" % handle.id)
        self.say("consumer", "pi ~ %.4f from %d samples, computed by task %s" % (
            value.get("pi_estimate", 0), value.get("samples", 0),
            value.get("task_id")))
        self.check(value.get("task_id") == handle.id and
                   3.1 < value.get("pi_estimate", 0) < 3.2,
                   "the result carries the task id")

    def locks(self):
        self.title("4. Three locked jobs run one at a time (huey.lock_task)")
        handles = [self.tasks.locked_sync_job("job-%d" % i, seconds=1.0)
                   for i in (1, 2, 3)]
        self.say("producer", "enqueued locked_sync_job job-1, job-2, job-3 "
                 "together; %d workers are free" % WORKERS)
        spans = []
        for handle in handles:
            outcome = self.result(handle, timeout=30)
            if outcome.status == "complete":
                value = outcome.value
                spans.append((_parse(value["started"]), _parse(value["finished"]),
                              value["tag"]))
        spans.sort()
        for start, end, tag in spans:
            self.say("consumer", "%s held the lock from %s to %s" % (
                tag, self.at(start), self.at(end)))
        ids = [h.id for h in handles]
        locked = self.events(
            "select count(*) from events where signal = 'locked' and task_id "
            "in (?, ?, ?)", ids)[0][0]
        self.say("consumer", "%d attempt(s) found the lock taken and were "
                 "retried a second later" % locked)
        overlap = any(a[1] > b[0] for a, b in zip(spans, spans[1:]))
        self.check(len(spans) == 3 and not overlap,
                   "all three ran, never two at once")

    def pipeline(self):
        self.title("5. A pipeline: fetch -> transform -> store")
        group = self.huey.enqueue(self.tasks.pipeline(7, 3))
        self.say("producer", "enqueued fetch.s(7).then(transform, 3).then(store)")
        values = [self.result(r).value for r in group]
        self.say("consumer", " -> ".join(repr(v) for v in values))
        self.check(values == [7, 21, {"stored": 21}], "7 -> 21 -> stored")

    def schedule(self):
        self.title("6. Delayed tasks: one runs, one is revoked before it is due")
        ran = self.tasks.quick_add.schedule((40, 2), delay=2)
        doomed = self.tasks.slow_io.schedule((0.1,), delay=2)
        doomed.revoke()
        self.say("producer", "quick_add(40, 2) in 2 s; slow_io(0.1) in 2 s, "
                 "then revoked at once")
        outcome = self.result(ran)
        self.wait_signal(doomed.id, "revoked")
        for name, handle in (("quick_add", ran), ("slow_io", doomed)):
            signals = self.signals_of(handle.id)
            self.say("consumer", "%-10s %s" % (name, ", ".join(
                "%s %s" % (s, self.at(ts)) for s, _, ts, _ in signals)))
        doomed_signals = [s for s, *_ in self.signals_of(doomed.id)]
        enqueued = self.signals_of(ran.id)[0][2]
        executed = [ts for s, _, ts, _ in self.signals_of(ran.id) if s == "executing"]
        self.check(outcome.value == 42 and executed and executed[0] - enqueued >= 1.9,
                   "the delayed task ran 2 s later, result 42")
        self.check("revoked" in doomed_signals and "executing" not in doomed_signals,
                   "the revoked task never ran")

    def blocking(self):
        from huey.exceptions import ResultTimeout

        self.title("7. Blocking on results, with a timeout")
        slow = self.tasks.slow_io(1.5)
        started = time.monotonic()
        try:
            slow.get(blocking=True, timeout=0.5)
            timed_out = False
        except ResultTimeout:
            timed_out = True
        self.say("producer", "slow_io(1.5).get(blocking=True, timeout=0.5): "
                 "%s after %.1f s" % ("ResultTimeout" if timed_out else "a result",
                                      time.monotonic() - started))
        started = time.monotonic()
        value = slow.get(blocking=True, timeout=10)
        self.say("producer", "asked again with timeout=10: %r after %.1f s more"
                 % (value, time.monotonic() - started))
        self.check(timed_out and value == "slept=1.5",
                   "a short timeout gives up; a long enough one gets the result")

    def heartbeats(self):
        self.title("8. Heartbeats: crontab every minute, sub-minute every %d s"
                   % self.tasks.HEARTBEAT_EVERY)
        deadline = time.monotonic() + 2 * self.tasks.HEARTBEAT_EVERY + 5
        counts = {}
        while time.monotonic() < deadline:
            counts = dict(self.events(
                "select task, count(*) from events where signal = 'complete' "
                "and task in ('heartbeat_minutely', 'heartbeat_tick') group by task"))
            if counts.get("heartbeat_minutely") and counts.get("heartbeat_tick"):
                break
            time.sleep(0.25)
        beats = self.events(
            "select task, ts from events where signal = 'complete' and task in "
            "('heartbeat_minutely', 'heartbeat_tick') order by ts")
        for task, ts in beats:
            self.say("consumer", "%-20s at %s" % (task, self.at(ts)))
        self.say("", "%d beats counted in the event store" % len(beats))
        self.check(counts.get("heartbeat_minutely", 0) >= 1 and
                   counts.get("heartbeat_tick", 0) >= 1,
                   "the minutely beat ran and scheduled the sub-minute ticks")

    def stop(self):
        self.title("9. Graceful stop while a task is running")
        handle = self.tasks.slow_io(1.0)
        self.wait_signal(handle.id, "executing")
        self.say("producer", "slow_io(1.0) is running; request_stop(graceful=True)")
        asked = time.monotonic()
        self.consumer.request_stop(graceful=True)
        stopped = self.consumer.wait_stopped(STOP_TIMEOUT)
        self.say("consumer", "stopped after %.1f s: %s; %d health checks ran "
                 "while it was up" % (time.monotonic() - asked,
                                      self.consumer.stop_reason,
                                      self.consumer.health_checks))
        signals = [s for s, *_ in self.signals_of(handle.id)]
        run = self.events("select stop_reason, heartbeat - started from runs "
                          "where id = ?", (self.consumer.run_id,))
        self.check(stopped and self.consumer.stop_reason == "graceful" and
                   "complete" in signals and run and run[0][0] == "graceful",
                   "the running task finished before the consumer exited")
        self.check(self.consumer.health_checks >= 1,
                   "health checks ran in the embedded consumer")

    def report(self):
        self.title("Report")
        try:
            from hueyscope.reports.builder import build_report
        except ImportError as exc:
            self.say("", "the report builder is not available (%s); skipped" % exc)
            return None
        try:
            index = build_report([self.settings.events], self.settings.site)
        except Exception as exc:  # the demo has shown its behaviours already
            self.say("", "report not built: %s: %s" % (type(exc).__name__, exc))
            self.failures.append("report")
            return None
        self.say("", "open %s" % index)
        return index


class _Handle:
    def __init__(self, task_id):
        self.id = task_id


def _parse(text):
    return datetime.datetime.fromisoformat(text).timestamp()


def prepare_folder(folder):
    """Make ``folder`` a fresh, empty demo folder.

    Only a folder this command made before (it holds the marker file) is
    deleted; anything else is refused.
    """
    folder = Path(folder).absolute()
    if folder.exists():
        if not folder.is_dir():
            raise BadInput("%s exists and is not a folder" % folder)
        if any(folder.iterdir()):
            if not (folder / MARKER).exists():
                raise BadInput("%s exists and is not a hueyscope demo folder; "
                               "refusing to delete it (choose another --dir)"
                               % folder)
            shutil.rmtree(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("made by hueyscope demo; deleted by the next one\n")
    except OSError as exc:
        raise BadInput("cannot create %s: %s" % (folder, exc.strerror))
    return folder


def _log_to(path):
    """Send huey's and the consumer's log (tracebacks of the failing demo
    calls included) to a file instead of the terminal."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s] %(levelname)s %(threadName)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


DEMO_MARK = "hueyscope-demo"  # a key the demo leaves in a server queue it used


def claim_server_queue(huey):
    """Empty a server queue for the demo, or refuse one that holds other work.

    A queue the demo used before carries its mark and is flushed; a queue
    with anything else in it is someone's: one line, exit 2, untouched.
    """
    storage = huey.storage
    used = (storage.queue_size() + storage.schedule_size()
            + storage.result_store_size())
    if used and not huey.storage.has_data_for_key(DEMO_MARK):
        raise ValueError("queue %r on %s is not empty (%d messages, scheduled "
                         "tasks or results) and not one the demo used: give "
                         "the demo a database or schema of its own" % (
                             huey.name, _safe_url(huey), used))
    storage.flush_all()
    storage.put_data(DEMO_MARK, b"1")


def _safe_url(huey):
    from hueyscope.queue.postgres import _safe

    return _safe(getattr(huey.storage, "dsn", None) or huey.name)


@click.command()
@click.option("--dir", "folder", default="demo-run", show_default=True,
              type=PathType(file_okay=False),
              help="Folder for the demo's event store and report (and queue, "
                   "on SQLite); recreated on each run.")
@click.option("--queue", default=None, metavar="URL",
              help="Run the demo on a postgresql:// queue instead of the "
                   "folder's queue.db. It must be empty, or one the demo "
                   "used before (it is emptied).")
@capture_options
def demo(folder, queue, **capture):
    """Run producer and consumer together and show every behaviour.

    Priorities, retries, a task id in a result, locks, a pipeline, delayed
    and revoked tasks, blocking results with timeouts, heartbeats and a
    graceful stop -- then the report, and what to run next.
    """
    if "hueyscope.demo_tasks" in sys.modules:
        raise BadInput("the demo catalogue is already imported in this "
                       "process; run the demo in a process of its own")
    # Settings first: a bad value must not cost the last demo's folder.
    if queue is not None and not queue.startswith(("postgresql://",
                                                    "postgres://")):
        # Redis' blocking pop cannot tell the order tasks were taken in,
        # which the first step checks.
        raise BadInput("--queue takes a postgresql:// URL; on SQLite the "
                       "demo keeps its queue in --dir")
    run = Demo(Path(folder).absolute(), queue=queue, **capture)
    folder = prepare_folder(folder)
    _log_to(folder / "consumer.log")
    click.echo("hueyscope demo in %s" % folder)
    click.echo("  producer: this process; consumer: %d thread workers in a "
               "thread of it; log in %s" % (WORKERS, folder / "consumer.log"))
    run.setup()
    try:
        for step in (run.priorities, run.flaky, run.pi, run.locks, run.pipeline,
                     run.schedule, run.blocking, run.heartbeats, run.stop):
            step()
    except KeyboardInterrupt:
        click.echo("\ninterrupted: stopping the consumer gracefully")
        if run.consumer is not None:
            run.consumer.request_stop(graceful=True)
            run.consumer.wait_stopped(STOP_TIMEOUT)
        raise click.exceptions.Exit(130)
    finally:
        if run.consumer is not None and not run.consumer.stopped.is_set():
            run.consumer.request_stop(graceful=False)
            run.consumer.wait_stopped(STOP_TIMEOUT)
    index = run.report()
    _summary(run, index)
    if run.failures:
        click.secho("\n%d check(s) failed: %s" % (
            len(run.failures), "; ".join(run.failures)), fg="red")
        raise click.exceptions.Exit(1)


def _summary(run, index):
    settings = run.settings
    click.echo("")
    click.secho("Done in %.1f s. Everything is in %s:" % (run.elapsed(), run.folder),
                bold=True)
    click.echo("  queue        %s" % settings.queue)
    click.echo("  event store  %s" % settings.events)
    if index:
        click.echo("  report       %s" % index)
    click.echo("  consumer log %s" % (run.folder / "consumer.log"))
    click.echo("")
    click.echo("Next:")
    command = hueyscope_command()
    click.echo("  %s browse %s" % (command, _quote(settings.events)))
    click.echo("  %s status --queue %s" % (command, _quote(settings.queue)))


def hueyscope_command():
    """How to run this hueyscope again from a shell, virtualenv active or not.

    "hueyscope" when that name finds this very script; else the full path
    of the script that is running; else this Python with ``-m hueyscope``.
    """
    import os
    import shutil

    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "hueyscope" and os.path.isfile(script):
        found = shutil.which("hueyscope")
        if found and os.path.realpath(found) == os.path.realpath(script):
            return "hueyscope"
        return _quote(os.path.abspath(script))
    return "%s -m hueyscope" % _quote(sys.executable)


def _quote(path):
    import shlex

    return shlex.quote(str(path))
