"""The event store's writer, in a process of its own.

Every recording process -- consumers, their worker processes, producers --
hands its batches to a child process that runs
:meth:`hueyscope.events.writer.Store.write` and answers once the batch is
committed (or given up on and counted as dropped), with what the store logged
meanwhile, which the recording process logs as its own. The writer thread
waits for that answer, so ``flush()`` and a graceful stop mean what they
meant: everything is in the store.

Why a child, for everyone:

- SQLite maps the store's ``-shm`` file (the WAL index) into the memory of
  every process that opens it, and writes through that mapping. A fault
  there -- the file made immutable (``chattr +i``), a filesystem that cannot
  back the page -- is SIGBUS, which kills the whole process; no exception is
  raised that a recorder could catch. In a child it kills the child: the
  user's process never maps the store, so the store cannot kill it.
- A consumer's drain slows by more when the recorder's SQL runs in its own
  process than when the same SQL runs in another one
  (``python benchmarks/drain_parts.py``).

A child that dies is started again, at once the first time and then with
backoff (:data:`RESTART_DELAYS`), and the batch in flight goes to the new
one: whether the dead one committed it is unknown, so it is at worst twice in
the store, never missing. A batch no child could take within
``give_up_after`` seconds is counted as dropped and logged, like one the
store refused; the count reaches the ``runs`` row with the next batch that
is written. The parent never writes the store itself.

The child ignores SIGINT and SIGTERM -- Ctrl-C reaches the whole process
group, and the consumer's graceful stop must still flush through it -- and
leaves when its input closes, that is when the recording process ends,
however it ends: killed, the recording process loses what was not yet handed
over (at most one flush interval), never what the child holds.
"""
import json
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time

from hueyscope import storable

logger = logging.getLogger("hueyscope.recorder")

# Each way, a message is a pickle preceded by its length. In: ("write",
# arguments of Store.write) or ("query", sql, params). Out: (result, the
# child store's written and dropped counts, drops not yet in the runs row,
# the (level, message) lines it logged meanwhile); result is None for a
# write, the rows for a query, or the text of the error a query raised.
_HEADER = struct.Struct("<I")
# The child's command: this process's import path first, so that it runs
# the hueyscope this process runs, wherever that was found (an app that
# put it on sys.path itself, a checkout), then main().
_BOOT = ("import json, sys; sys.path[:0] = [p for p in json.loads("
         "sys.argv.pop(1)) if p not in sys.path]; "
         "from hueyscope.events.writer_process import main; main()")
# Seconds before starting a child again after consecutive deaths; a batch
# that is answered resets the count. The first restart is immediate: a child
# killed once (by the OOM killer, by hand) costs nothing.
RESTART_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0, 5.0)


# Popen waits for its child's exec on a pipe whose write end only the
# child should have; a fork by another thread meanwhile (huey's process
# workers start while the writer thread starts its writer process) copies
# that end into a process that never execs, and Popen then waits forever.
# Forks of this process wait while a writer process is being started.
_spawning = threading.RLock()
os.register_at_fork(before=_spawning.acquire,
                    after_in_parent=_spawning.release,
                    after_in_child=_spawning.release)


class ChildDied(Exception):
    """The writer process exited while a request was with it."""


class _Unpicklable(Exception):
    """A request holds a value pickle cannot take; nothing was sent."""


def _storable(plains, samples, ident):
    """A batch's events, samples and identity with only plain values."""
    from hueyscope.events.rows import storable_batch

    return (storable_batch(plains), [storable.row(s) for s in samples],
            storable.row(ident))


class ProcessStore:
    """Writes batches through a child process; the interface of writer.Store."""

    def __init__(self, path, give_up_after=60.0, migrations=None):
        self.path = path
        self.give_up_after = give_up_after
        self.migrations = migrations  # see writer.Store
        self.written = 0  # events committed, all children together
        self.dropped = 0  # events given up, all children together
        self.restarts = 0  # children that died and were replaced
        self._child = None
        self._to_child = self._from_child = None  # raw pipe ends
        self._base = (0, 0)  # written, dropped of the children that died
        self._fresh = True  # the child has not taken a batch yet
        self._deaths = 0  # deaths since the last answered request
        self._next_start = 0.0  # monotonic time a child may start again
        # A new child's store knows nothing: the parent restates what only
        # the dead one knew -- the runs row and the drops not yet in it.
        self._run_row = None
        self._owed = 0
        self._lock = threading.Lock()  # one request at a time on the pipes

    @property
    def unrecorded(self):
        """Events dropped that the runs row does not count yet, as last known."""
        return self._owed

    def start(self):
        """Start the child now, without waiting for it to be ready.

        Called when recording begins, so a short-lived producer does not wait
        for the child's imports at its first flush: they run meanwhile.
        """
        with self._lock:
            if self._child is None:
                try:
                    self._ensure_child(time.monotonic())
                except ChildDied:
                    pass  # logged; the first write tries again

    def write(self, plains, run_row, samples, dropped, run_id, host, pid, queue):
        """Write one batch through a child; never raises.

        ``dropped`` counts events the caller lost before they reached the
        store; they go into the runs row, not into this store's own count.
        """
        if run_row is not None:
            self._run_row = run_row
        self._owed += dropped
        deadline = time.monotonic() + self.give_up_after
        safe = False
        while True:
            try:
                with self._lock:
                    self._ensure_child(deadline)
                    fresh = self._fresh
                    batch = (plains, self._run_row if fresh else run_row,
                             samples, self._owed if fresh else dropped,
                             run_id, host, pid, queue)
                    self._request(("write", batch))
                return
            except (ChildDied, OSError) as exc:
                if time.monotonic() >= deadline:
                    self._give_up(plains, exc)
                    return
            except _Unpicklable as exc:
                # A value pickle cannot take (a task's priority of some
                # odd type): nothing was sent. Sent again as plain values,
                # as the store would have stored them (see storable).
                if safe:
                    self._give_up(plains, exc)
                    return
                plains, samples, (run_id, host, pid, queue) = _storable(
                    plains, samples, (run_id, host, pid, queue))
                run_row = storable.mapping(run_row)
                self._run_row = storable.mapping(self._run_row)
                safe = True

    def query(self, sql, params=(), timeout=10.0):
        """Rows of a read-only ``sql`` on the store, read by the child.

        Returns None when no answer came: the child busy with a batch
        longer than ``timeout``, dead, or the query failed (logged).
        """
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            self._ensure_child(time.monotonic() + timeout)
            result = self._request(("query", sql, params))
        except (ChildDied, OSError, _Unpicklable):
            return None
        finally:
            self._lock.release()
        if isinstance(result, str):
            logger.warning("hueyscope recorder: query of the event store "
                           "failed: %s", result)
            return None
        return result

    # -- the child -----------------------------------------------------------

    def _ensure_child(self, deadline):
        """Start a child unless one runs; wait out the restart backoff first.

        Raises ChildDied if the backoff runs past ``deadline``.
        """
        if self._child is not None:
            return
        wait = self._next_start - time.monotonic()
        if wait > 0:
            if time.monotonic() + wait > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                raise ChildDied("no writer process (restarting it in %.1f s)"
                                % (self._next_start - time.monotonic()))
            time.sleep(wait)
        try:
            self._start()
        except OSError as exc:  # out of processes, of memory, of fds
            self._schedule_restart()
            logger.error("hueyscope recorder: cannot start the writer "
                         "process (%s)", exc)
            raise ChildDied(str(exc))

    def _schedule_restart(self):
        delay = RESTART_DELAYS[min(self._deaths, len(RESTART_DELAYS) - 1)]
        self._deaths += 1
        self._next_start = time.monotonic() + delay
        return delay

    def _start(self):
        to_child, child_in = os.pipe()
        child_out, from_child = os.pipe()
        try:
            with _spawning:
                self._child = subprocess.Popen(
                    [sys.executable, "-c", _BOOT, json.dumps(sys.path),
                     self.path, repr(self.give_up_after),
                     json.dumps(self.migrations)],
                    stdin=to_child, stdout=from_child, close_fds=True)
        except BaseException:
            for fd in (child_in, child_out):
                os.close(fd)
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        self._to_child, self._from_child = child_in, child_out
        self._fresh = True

    def _request(self, message):
        """Send one request and return the child's result; ChildDied if it died.

        Raises _Unpicklable, having sent nothing, if pickle cannot take it.
        """
        try:
            data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise _Unpicklable("%s: %s" % (type(exc).__name__, exc))
        try:
            self._send(data)
            size = _HEADER.unpack(self._read(_HEADER.size))[0]
            answer = pickle.loads(self._read(size))
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self._buried(exc)
            raise ChildDied(str(exc))
        result, written, dropped, owed, lines = answer
        self.written = self._base[0] + written
        self.dropped = self._base[1] + dropped
        self._owed = owed
        self._fresh = False
        self._deaths = 0
        for level, text in lines:
            logger.log(level, "%s", text)
        return result

    def _buried(self, exc):
        """Reap a dead child, log how it died, and set when the next may start."""
        child = self._child
        self._close_pipes()
        self._child = None
        self._base = (self.written, self.dropped)
        how = "exited"
        try:
            code = child.wait(timeout=5)
            how = ("killed by %s" % signal.Signals(-code).name if code < 0
                   else "exited with code %d" % code)
        except Exception:
            child.kill()
        self.restarts += 1
        delay = self._schedule_restart()
        logger.error("hueyscope recorder: the writer process %s (%s); a new "
                     "one takes over in %.1f s and is given what it was "
                     "writing", how, exc, delay)

    def _give_up(self, plains, exc):
        # Counted like a batch the store refused: in stats(), in the log,
        # and in the runs row with the next batch that reaches the store.
        self.dropped += len(plains)
        self._base = (self._base[0], self._base[1] + len(plains))
        self._owed += len(plains)
        logger.error("hueyscope recorder: %d event(s) not recorded (no writer "
                     "process could take them: %s); %d dropped in this "
                     "process so far", len(plains), exc, self.dropped)

    def _send(self, data):
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self._to_child, view):]

    def _read(self, size):
        data = b""
        while len(data) < size:
            chunk = os.read(self._from_child, size - len(data))
            if not chunk:
                raise EOFError("the writer process exited")
            data += chunk
        return data

    def close(self):
        """Close the pipes: the child writes what it has, then exits."""
        with self._lock:
            self._close_pipes()
            child, self._child = self._child, None
        if child is not None:
            try:
                child.wait(timeout=self.give_up_after + 5)
            except Exception:
                child.kill()

    def forget(self):
        """In a forked child: let go of the parent's pipes, touching nothing else.

        The copies must be closed, or the parent's writer process would not
        see its input close when the parent ends.
        """
        self._close_pipes()
        self._child = None
        self._lock = threading.Lock()

    def _close_pipes(self):
        for fd in (self._to_child, self._from_child):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to_child = self._from_child = None


class _Lines(logging.Handler):
    """Keeps what the store logs, for the answer to the recording process."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelno, record.getMessage()))


def serve(path, give_up_after, inp, out, migrations=None):
    """The child's loop: requests in, answers out, until its input closes."""
    from hueyscope.events import writer

    lines = _Lines()
    logger.addHandler(lines)
    logger.propagate = False
    store = writer.Store(path, give_up_after, migrations)
    while True:
        header = _read_exactly(inp, _HEADER.size)
        if not header:
            break
        message = pickle.loads(_read_exactly(inp, _HEADER.unpack(header)[0]))
        if message[0] == "write":
            store.write(*message[1])
            result = None
        else:
            result = store.query(*message[1:])
        answer = pickle.dumps((result, store.written, store.dropped,
                               store.unrecorded, lines.lines))
        lines.lines = []
        out.write(_HEADER.pack(len(answer)) + answer)
        out.flush()
    store.close()


def _read_exactly(stream, size):
    data = stream.read(size)
    if data and len(data) < size:
        raise EOFError("a request was cut short")
    return data


def main():
    # A Ctrl-C or a SIGTERM sent to the consumer's process group is the
    # consumer's to handle; this process still has its last batches to write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, give_up_after = sys.argv[1], float(sys.argv[2])
    migrations = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    serve(path, give_up_after, sys.stdin.buffer, sys.stdout.buffer, migrations)


if __name__ == "__main__":
    main()
