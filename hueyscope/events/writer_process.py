"""The writer in a process of its own, for consumers.

A consumer's drain slows by more when the recorder's SQL runs in the
consumer's own process than when the same SQL runs in another one
(``python benchmarks/drain_parts.py``). So a consumer's writer thread hands
each batch, as the plain tuples it already has, to a child process that runs
the same :meth:`hueyscope.events.writer.Store.write` and answers once the
batch is committed (or given up on and counted as dropped), with what the
store logged meanwhile, which the consumer logs as its own. The writer
thread waits for that answer, so ``flush()`` and a graceful stop mean what
they meant: everything is in the store.

The child ignores SIGINT and SIGTERM -- Ctrl-C reaches the whole process
group, and the consumer's graceful stop must still flush through it -- and
leaves when its input closes, that is when the recording process ends,
however it ends: killed, the consumer loses what was not yet handed over (at
most one flush interval), never what the child holds.

If the child cannot be started or dies, the store falls back to writing in
this process, and says so in the log.
"""
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys

from hueyscope.events import writer

logger = logging.getLogger("hueyscope.recorder")

# Each way, a message is a pickle preceded by its length. In: the arguments
# of Store.write. Out: the child's store's written and dropped counts, and
# the (level, message) lines it logged for that batch.
_HEADER = struct.Struct("<I")


class ProcessStore:
    """A :class:`~hueyscope.events.writer.Store` whose writes run in a child."""

    def __init__(self, path, give_up_after=60.0):
        self.path = path
        self.give_up_after = give_up_after
        self.written = 0
        self.dropped = 0
        self._child = None
        self._to_child = self._from_child = None  # raw pipe ends
        self._local = None  # the in-process store, once the child failed
        self._local_base = (0, 0)

    def write(self, plains, run_row, samples, dropped, run_id, host, pid, queue):
        """Write one batch through the child; never raises."""
        batch = (plains, run_row, samples, dropped, run_id, host, pid, queue)
        if self._local is None:
            try:
                if self._child is None:
                    self._start()
                self._send(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))
                size = _HEADER.unpack(self._read(_HEADER.size))[0]
                self.written, self.dropped, lines = pickle.loads(
                    self._read(size))
            except Exception as exc:
                # Whether the child committed the batch in flight before it
                # died is unknown; written again here, it is at worst twice
                # in the store, never missing.
                logger.error("hueyscope recorder: writer process failed (%s); "
                             "writing from this process from now on", exc)
                self.close()
                self._local = writer.Store(self.path, self.give_up_after)
                self._local_base = (self.written, self.dropped)
            else:
                for level, message in lines:
                    logger.log(level, "%s", message)
                return
        self._local.write(*batch)
        self.written = self._local_base[0] + self._local.written
        self.dropped = self._local_base[1] + self._local.dropped

    def _start(self):
        to_child, child_in = os.pipe()
        child_out, from_child = os.pipe()
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "hueyscope.events.writer_process",
                 self.path, repr(self.give_up_after)],
                stdin=to_child, stdout=from_child, close_fds=True)
        finally:
            os.close(to_child)
            os.close(from_child)
        self._to_child, self._from_child = child_in, child_out

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
        self._close_pipes()
        child, self._child = self._child, None
        if child is not None:
            try:
                child.wait(timeout=self.give_up_after + 5)
            except Exception:
                child.kill()
        if self._local is not None:
            self._local.close()

    def forget(self):
        """In a forked child: let go of the parent's pipes, touching nothing else.

        The copies must be closed, or the parent's writer process would not
        see its input close when the parent ends.
        """
        self._close_pipes()
        self._child = None

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


def serve(path, give_up_after, inp, out):
    """The child's loop: batches in, answers out, until its input closes."""
    lines = _Lines()
    logger.addHandler(lines)
    logger.propagate = False
    store = writer.Store(path, give_up_after)
    while True:
        header = _read_exactly(inp, _HEADER.size)
        if not header:
            break
        batch = pickle.loads(_read_exactly(inp, _HEADER.unpack(header)[0]))
        store.write(*batch)
        answer = pickle.dumps((store.written, store.dropped, lines.lines))
        lines.lines = []
        out.write(_HEADER.pack(len(answer)) + answer)
        out.flush()
    store.close()


def _read_exactly(stream, size):
    data = stream.read(size)
    if data and len(data) < size:
        raise EOFError("a batch was cut short")
    return data


def main():
    # A Ctrl-C or a SIGTERM sent to the consumer's process group is the
    # consumer's to handle; this process still has its last batches to write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, give_up_after = sys.argv[1], float(sys.argv[2])
    serve(path, give_up_after, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
