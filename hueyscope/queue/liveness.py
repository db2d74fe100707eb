"""Is the process that took a task still alive?

A lease names the process that holds it by host identity, pid and the
process's start time. On the same host that answers the question exactly:
the pid is gone, a zombie, or reused by another process (its start time
differs). Across hosts -- or containers that share one volume but not a pid
namespace -- no pid can be checked, and only a heartbeat older than the
lease timeout says the holder is dead.
"""
import os
import socket

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def host_identity():
    """Who "this host" is, for pid checks: hostname, boot and pid namespace.

    Two containers on one kernel share the boot id but not the pid
    namespace, and a rebooted host keeps its name but not its boot id: in
    each case a pid seen by the other cannot be checked from here.
    """
    parts = [socket.gethostname()]
    try:
        with open(_BOOT_ID) as f:
            parts.append(f.read().strip()[:8])
    except OSError:
        pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


def process_start(pid):
    """The start time of ``pid`` in clock ticks since boot, or None.

    None means "cannot tell" (no /proc), never "dead": see :func:`is_alive`.
    """
    stat = _stat_fields(pid)
    if stat is None:
        return None
    try:
        return int(stat[19])
    except (IndexError, ValueError):
        return None


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last.
    return text[text.rfind(")") + 2:].split()


def is_alive(pid, start=None):
    """True if ``pid`` runs, is not a zombie and started at ``start`` (if known)."""
    if pid is None or pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        stat = _stat_fields(pid)
        if stat is None:
            return False
        if stat[0] in ("Z", "X"):  # killed, not yet reaped by its parent
            return False
        return start is None or process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
