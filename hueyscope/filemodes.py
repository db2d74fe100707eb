"""Who may read the files hueyscope writes.

The queue holds every task's arguments pickled and unredacted (huey needs
them to run the task), and the event store holds what the recorder kept of
them: both are created owner-only (0600). SQLite gives the ``-wal``,
``-shm`` and ``-journal`` files it creates the permissions of their main
file, so they follow; the event store's reserve file is owner-only too.

Files made to be read by others -- the report's folder and pages, the
metrics textfile -- follow the umask, never forced wider than it.

A file that exists keeps the mode its owner gave it: nothing here changes
the mode of a file it did not create. A file replaced by a new one (the
textfile, the report's folder) gets the mode of the one it replaces.
"""
import os
import stat

OWNER_ONLY = 0o600


def create_private(path):
    """Create ``path`` empty and owner-only unless it exists; True if created.

    Called before SQLite opens a database it may create, so that the file
    never exists with wider permissions. SQLite's names that are not files
    (``:memory:``, an empty name) are left to it, and so is a path that
    cannot be created: SQLite then says why in its own words, as before.
    """
    path = os.fspath(path)
    if not path or path == ":memory:":
        return False
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, OWNER_ONLY)
    except OSError:  # it exists (even as a dangling link), or cannot be made
        return False
    os.close(fd)
    return True


def open_private(path):
    """``path`` opened for writing bytes, emptied; created owner-only if new."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, OWNER_ONLY), "wb")


def mode_of(path):
    """The permission bits of ``path``, or None if there is nothing there."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def replace_file(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file and a rename.

    Readers see the old content or the new, never a part. A new file gets
    the umask's mode; one that replaces a file gets that file's mode, so
    that permissions its owner set (a group allowed to read) survive every
    rewrite.
    """
    path = os.fspath(path)
    keep = mode_of(path)
    tmp = "%s.%s.tmp" % (path, os.urandom(4).hex())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666)  # the umask decides
    try:
        if keep is not None:
            os.fchmod(fd, keep)
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def make_folder(parent, prefix):
    """A new folder in ``parent`` named ``prefix`` and a random tail.

    Unlike tempfile.mkdtemp (always 0700), its mode follows the umask: it
    is meant to be published (the report's site).
    """
    while True:
        path = os.path.join(os.fspath(parent), prefix + os.urandom(4).hex())
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
