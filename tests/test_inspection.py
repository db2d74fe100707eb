"""Reading is not running: commands that inspect a queue never unpickle it.

A queue file may come from anywhere (copied from another host to look at),
and unpickling runs whatever the pickle names. Each message here, loaded,
creates a marker file; ``recover --dry-run``, ``status`` and ``failed`` run
as a user types them, and the marker must never appear. A real recovery,
which does load the messages, shows that it would.
"""
import json
import os
import time

import pytest
from huey.registry import Message

from hueyscope.queue import liveness
from hueyscope.queue.factory import QUEUE_NAME
from hueyscope.queue.sqlite import SqliteHuey


class Trap:
    """Unpickled, opens (so creates) ``marker``: code run by pickle.loads."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "a"))


def _message(task_id, name, args=(), on_complete=None):
    return Message(task_id, name, None, 0, 0, None, args, {}, on_complete,
                   None, None, None)


def _pid_nobody_has():
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


def build_trapped_queue(path, marker):
    """A queue whose every stored message and result runs code when loaded.

    A dead holder (a pid no process can have, on this host) leases three
    messages: a task with a trapped argument, a bare trap, and a pipeline
    step whose result is stored (a trap too) with a trapped next step. One
    trapped message waits in the queue, one in the schedule, one in the
    failed set.
    """
    huey = SqliteHuey(QUEUE_NAME, filename=str(path))
    huey.recover_on_dequeue = False
    trap = Trap(marker)
    ser = huey.serializer.serialize
    step = _message("next-1", "app.tasks.second", (trap,))
    now = time.time()
    with huey.storage.db(commit=True) as curs:
        curs.execute(
            "insert into hueyscope_holder (host, hostname, pid, pid_start, "
            "run_id, started, heartbeat) values (?, 'h', ?, null, 'run-dead', ?, ?)",
            (liveness.host_identity(), _pid_nobody_has(), now, now))
        holder = curs.lastrowid
        for data in (ser(_message("trapped-1", "app.tasks.first", (trap,))),
                     ser(trap),
                     ser(_message("stored-1", "app.tasks.first", (trap,),
                                  on_complete=step))):
            curs.execute(
                "insert into hueyscope_lease (queue, data, priority, holder, "
                "taken) values (?, ?, 0, ?, ?)", (QUEUE_NAME, data, holder, now))
        curs.execute("insert into kv (queue, key, value) values (?, ?, ?)",
                     (QUEUE_NAME, "stored-1", ser(trap)))
        curs.execute("insert into task (queue, data, priority) values (?, ?, 0)",
                     (QUEUE_NAME, ser(_message("waiting-1", "app.tasks.first",
                                               (trap,)))))
        curs.execute("insert into schedule (queue, data, timestamp) values "
                     "(?, ?, ?)", (QUEUE_NAME, ser(_message(
                         "later-1", "app.tasks.first", (trap,))), now + 3600))
        curs.execute(
            "insert into hueyscope_dead_letter (queue, task_id, task, data, "
            "priority, reason, recoveries, run_id, parked, kind, error_type) "
            "values (?, 'failed-1', 'app.tasks.first', ?, 0, 'ValueError: no', "
            "0, 'run-dead', ?, 'failed', 'ValueError')",
            (QUEUE_NAME, ser(_message("failed-1", "app.tasks.first", (trap,))),
             now))
    huey.storage.close()


@pytest.fixture
def trapped(cli):
    marker = cli.folder / "unpickled"
    build_trapped_queue(cli.queue, marker)
    assert not marker.exists()
    cli.marker = marker
    return cli


@pytest.mark.timeout(120)
def test_inspecting_a_queue_never_unpickles_it(trapped):
    cli = trapped
    result = cli.run("recover", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # What the lease columns and the messages' literals tell, read unloaded.
    assert "would requeue  trapped-1 app.tasks.first (run run-dead" in out
    assert "would requeue  ? ? (run run-dead" in out
    assert "would settle   stored-1 app.tasks.first" in out
    assert "would enqueue  next-1 app.tasks.second, the next step of stored-1" in out
    assert "dry run: 2 requeued, 0 parked, 1 settled" in out
    assert not cli.marker.exists()

    result = cli.run("status")
    assert result.returncode == 0, result.stderr
    assert not cli.marker.exists()
    for args in (("failed",), ("failed", "--json")):
        result = cli.run(*args)
        assert result.returncode == 0, result.stderr
        assert "failed-1" in result.stdout
    assert [e["task_id"] for e in json.loads(result.stdout)] == ["failed-1"]
    assert not cli.marker.exists()
    # Nothing was changed: the dead holder's leases are all still there.
    result = cli.run("recover", "--dry-run")
    assert "dry run: 2 requeued" in result.stdout
    assert not cli.marker.exists()


@pytest.mark.timeout(120)
def test_the_trap_is_real_a_recovery_loads_the_messages(trapped):
    # Recovery proper rebuilds messages and the next step from them: it
    # loads them, which is why only the dry run may be pointed at a file
    # from elsewhere.
    trapped.run("recover")
    assert os.path.exists(trapped.marker)
