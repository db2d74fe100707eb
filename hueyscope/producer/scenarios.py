"""Scenarios: what ``hueyscope produce SCENARIO`` enqueues.

Each scenario enqueues demo catalogue tasks (:mod:`hueyscope.demo_tasks`)
and returns the :class:`Submitted` handles, so the command can print them
and, with ``--wait``, block on their results. Every outcome is deterministic
(no random failures), so tests and reports know exactly what to expect; the
per-round numbers are in each docstring.
"""
import dataclasses
import datetime
import time

from huey.exceptions import ResultTimeout, TaskException

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


@dataclasses.dataclass
class Submitted:
    """One thing a scenario enqueued and what to expect of it."""

    label: str
    task_ids: list
    expect: str = "result"  # "result", "revoked" or "expired": no result comes
    priority: int = None
    eta: str = None


def _in_seconds(seconds):
    """An absolute UTC time: a relative ``expires`` would be resolved again
    when the scheduler moves the delayed task to the queue, and never pass."""
    return (datetime.datetime.now(datetime.timezone.utc)
            + datetime.timedelta(seconds=seconds))


def _one(label, result, **kw):
    return Submitted(label, [result.id], **kw)


@scenario
def mixed(tasks, count):
    """A mix of priorities, low priority first, per round: 2 slow_io (p10),
    3 quick_add (p50), 1 cpu_pi_estimate (p60), 1 flaky_network_call that
    succeeds at once (p100). 7 tasks, all complete."""
    out = []
    for i in range(count):
        out.append(_one("slow_io(0.3)", tasks.slow_io(0.3), priority=10))
        out.append(_one("quick_add(%d, 1)" % i, tasks.quick_add(i, 1), priority=50))
        out.append(_one("slow_io(0.3)", tasks.slow_io(0.3), priority=10))
        out.append(_one("quick_add(%d, 2)" % i, tasks.quick_add(i, 2), priority=50))
        out.append(_one("cpu_pi_estimate(50000)",
                        tasks.cpu_pi_estimate(samples=50_000, seed=i), priority=60))
        out.append(_one("quick_add(%d, 3)" % i, tasks.quick_add(i, 3), priority=50))
        out.append(_one("flaky_network_call(fail_times=0)",
                        tasks.flaky_network_call(fail_times=0), priority=100))
    return out


@scenario
def flaky(tasks, count):
    """Per round: one call failing twice then succeeding (3 attempts: 2 error,
    2 retrying, 1 complete), one failing every attempt (4 attempts: 4 error,
    3 retrying, then failed)."""
    out = []
    for _ in range(count):
        out.append(_one("flaky_network_call(fail_times=2)",
                        tasks.flaky_network_call(fail_times=2), priority=100))
        out.append(_one("flaky_network_call(fail_times=4)",
                        tasks.flaky_network_call(fail_times=4), priority=100))
    return out


@scenario
def locks(tasks, count):
    """Per round: three locked_sync_job (1 s each) behind one lock. They
    collide (at least one 'locked' signal with more than one worker) and run
    one at a time; all three complete."""
    out = []
    for i in range(count):
        for j in range(3):
            tag = "job-%d" % (i * 3 + j + 1)
            out.append(_one("locked_sync_job(%r)" % tag,
                            tasks.locked_sync_job(tag, seconds=1.0)))
    return out


@scenario
def pipeline(tasks, count):
    """Per round: fetch(7) -> transform(x, 3) -> store(x): 7 -> 21 -> stored.
    Three tasks, all complete."""
    out = []
    for _ in range(count):
        group = tasks.huey.enqueue(tasks.pipeline(7, 3))
        out.append(Submitted("pipeline fetch(7) -> transform(3) -> store",
                             [r.id for r in group]))
    return out


@scenario
def schedule(tasks, count):
    """Per round: quick_add delayed 2 s (runs), slow_io delayed 2 s then
    revoked (never runs: one 'revoked' signal), quick_add delayed 2 s that
    expires after 1 s (never runs: one 'expired' signal)."""
    out = []
    for i in range(count):
        out.append(_one("quick_add(%d, 100) in 2 s" % i,
                        tasks.quick_add.schedule((i, 100), delay=2), eta="+2s"))
        doomed = tasks.slow_io.schedule((0.1,), delay=2)
        doomed.revoke()
        out.append(_one("slow_io(0.1) in 2 s, revoked", doomed,
                        expect="revoked", eta="+2s"))
        out.append(_one("quick_add(%d, 200) in 2 s, expires in 1 s" % i,
                        tasks.quick_add.schedule((i, 200), delay=2,
                                                 expires=_in_seconds(1)),
                        expect="expired", eta="+2s"))
    return out


@scenario
def load(tasks, count, progress=None):
    """``count`` quick_add tasks (default 1000), enqueued as fast as the
    queue takes them."""
    out = []
    for i in range(count):
        result = tasks.quick_add(i, i)
        out.append(Submitted("quick_add(%d, %d)" % (i, i), [result.id]))
        if progress is not None:
            progress(1)
    return out


DEFAULT_COUNT = {"load": 1000}


@dataclasses.dataclass
class Outcome:
    status: str  # "complete", "failed", "timeout"
    value: object = None
    error: str = None
    waited: float = 0.0


def wait_for(huey, task_id, deadline):
    """The final outcome of a task, blocking until ``deadline`` (monotonic).

    huey stores a retried task's intermediate errors as its result, then
    replaces them with the final one: an error with retries left is read and
    waited past.
    """
    start = time.monotonic()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Outcome("timeout", waited=time.monotonic() - start)
        try:
            value = huey.result(task_id, blocking=True, timeout=remaining,
                                max_delay=0.2)
        except ResultTimeout:
            return Outcome("timeout", waited=time.monotonic() - start)
        except TaskException as exc:
            if exc.metadata.get("retries"):
                continue
            return Outcome("failed", error=exc.metadata.get("error"),
                           waited=time.monotonic() - start)
        return Outcome("complete", value, waited=time.monotonic() - start)
