"""Values as a database takes them, whatever a task was given or raised.

A task's arguments and errors are the user's: a ``__repr__`` or ``__str__``
that raises, a lone surrogate (what ``json.loads('"\\ud800"')`` returns, or
``os.listdir`` for a file name that is not UTF-8), an integer wider than 64
bits. SQLite (and PostgreSQL) refuse such text outright -- ``surrogates not
allowed`` -- so one of them would fail every row written with it. The
recorder and the failed set store them in a safe form instead:

- text keeps everything but its lone surrogates, which become the escape
  ``\\udXXX`` (Python's ``backslashreplace``): readable, and inside JSON
  text the very escape that decodes to the original string;
- a repr or str that raises becomes ``<unrepresentable Foo: ValueError: ...>``;
- any other value no column takes becomes its (safe) repr.

Both sides import this module: the event store's writer and the queue's
failed set spell the same message the same way.
"""

INT64 = (-(1 << 63), (1 << 63) - 1)


def text(value):
    """``value`` with each lone surrogate escaped as ``\\udXXX``.

    Text that encodes as UTF-8 is returned as it is (the same object).
    """
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def repr_of(value):
    """``repr(value)``, or a placeholder saying why there is none; never raises."""
    return _text_by(repr, "__repr__", value)


def str_of(value):
    """``str(value)`` (of an exception, say), or a placeholder; never raises."""
    return _text_by(str, "__str__", value)


def _text_by(convert, method, value):
    try:
        out = convert(value)
        if isinstance(out, str):
            return out
        raise TypeError("%s returned %s" % (method, type(out).__name__))
    except Exception as exc:
        return _unrepresentable(value, exc)


def _unrepresentable(value, exc):
    try:
        why = str(exc)
    except Exception:
        why = ""
    try:
        name = type(value).__name__
    except Exception:
        name = "object"
    return "<unrepresentable %s: %s%s>" % (
        name, type(exc).__name__, ": " + why if why else "")


def scalar(value):
    """``value`` as an SQLite column takes it: None, a number, bytes or text."""
    if value is None:
        return None
    cls = value.__class__
    if cls is float or cls is bytes:
        return value
    if isinstance(value, str):
        # A subclass of str as the plain str it holds: a pickle of it would
        # need its class, a column needs only its characters.
        return text(str.__str__(value))
    if isinstance(value, int):  # bool too
        value = int(value)
        return value if INT64[0] <= value <= INT64[1] else str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return text(repr_of(value))


def row(values):
    """A tuple of :func:`scalar` values."""
    return tuple(scalar(v) for v in values)


def mapping(values):
    """A dict of :func:`scalar` values (None stays None)."""
    if values is None:
        return None
    return {k: scalar(v) for k, v in values.items()}
