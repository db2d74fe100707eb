"""What a queued message says, read without unpickling it.

huey stores each message as a pickle, and unpickling runs whatever code the
pickle names: looking into a queue file (``hueyscope recover --dry-run``,
a file copied from another host) must not run it. The opcodes of a pickle
are walked here with :mod:`pickletools`, which only decodes them: no
module is imported, no class looked up, no function called. What a class
or function would have built is kept as a :class:`Call` of a
:class:`Global` -- a name, nothing more -- so the task id and name of a
message, its next pipeline step, and whether a stored result is an error
can be read from their literals.

Anything this does not understand (another serializer, an opcode it does
not follow, a message that is not huey's) reads as None: the caller shows
what it cannot read as unknown.
"""
import collections
import pickletools
import zlib

# huey's names for what it pickles.
MESSAGE = ("huey.registry", "Message")
ERROR = ("huey.utils", "Error")
# Field positions in huey's Message namedtuple.
ID, NAME, ON_COMPLETE = 0, 1, 8

MAX_OPS = 1_000_000  # opcodes read from one pickle before giving up
MAX_INFLATED = 64 * 1024 * 1024  # bytes a compressed message may inflate to

Global = collections.namedtuple("Global", "module name")
Call = collections.namedtuple("Call", "func args")


class Unreadable(Exception):
    """A pickle this module does not follow."""


class _Mark:
    pass


_MARK = _Mark()
_OPAQUE = object()  # a value of a kind that is never needed here
UNREADABLE = object()  # what :func:`read` says of a value it cannot read

# Opcodes that push their argument as it is.
_LITERALS = frozenset((
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"))
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False,
              "EMPTY_TUPLE": ()}
_IGNORED = frozenset(("PROTO", "FRAME"))


def literal(data):
    """The object a pickle describes, built of literals, Global and Call.

    Lists and dicts come back as lists (a dict as a list of key, value
    pairs: its keys may be Calls). Raises :class:`Unreadable`.
    """
    stack, memo = [], {}

    def pop_mark():
        items = []
        while True:
            if not stack:
                raise Unreadable("no mark")
            item = stack.pop()
            if item is _MARK:
                return items[::-1]
            items.append(item)

    try:
        for n, (op, arg, _) in enumerate(pickletools.genops(data)):
            name = op.name
            if n > MAX_OPS:
                raise Unreadable("too long")
            if name in _LITERALS:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in _IGNORED:
                pass
            elif name == "STOP":
                if len(stack) != 1:
                    raise Unreadable("stack not single at STOP")
                return stack[0]
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                size = int(name[-1])
                if len(stack) < size:
                    raise Unreadable("short stack")
                items = tuple(stack[-size:])
                del stack[-size:]
                stack.append(items)
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name in ("EMPTY_LIST", "EMPTY_DICT"):
                stack.append([])
            elif name in ("LIST", "DICT"):
                items = pop_mark()
                stack.append(items if name == "LIST" else
                             list(zip(items[::2], items[1::2])))
            elif name == "APPEND":
                item = stack.pop()
                _extend(stack[-1], [item])
            elif name == "APPENDS":
                items = pop_mark()
                _extend(stack[-1], items)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _extend(stack[-1], [(key, value)])
            elif name == "SETITEMS":
                items = pop_mark()
                _extend(stack[-1], list(zip(items[::2], items[1::2])))
            elif name in ("EMPTY_SET",):
                stack.append(_OPAQUE)
            elif name == "FROZENSET":
                pop_mark()
                stack.append(_OPAQUE)
            elif name == "ADDITEMS":
                pop_mark()
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                stack.append(Global(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(Global(module, attr))
            elif name in ("REDUCE", "NEWOBJ"):
                args, func = stack.pop(), stack.pop()
                stack.append(Call(func, args))
            elif name == "NEWOBJ_EX":
                stack.pop()  # keyword arguments
                args, func = stack.pop(), stack.pop()
                stack.append(Call(func, args))
            elif name == "OBJ":
                items = pop_mark()
                stack.append(Call(items[0], tuple(items[1:])) if items
                             else _OPAQUE)
            elif name == "INST":
                module, _, attr = arg.partition(" ")
                stack.append(Call(Global(module, attr), tuple(pop_mark())))
            elif name == "BUILD":
                stack.pop()  # the state set on the object below
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4",
                          "NEXT_BUFFER", "READONLY_BUFFER"):
                if name == "BINPERSID":
                    stack.pop()
                stack.append(_OPAQUE)
            else:
                raise Unreadable("opcode %s" % name)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise Unreadable(str(exc))
    raise Unreadable("no STOP")


def _extend(target, items):
    if not isinstance(target, list):
        raise Unreadable("not a list or dict")
    target.extend(items)


def _inflated(serializer, data):
    """The pickle inside ``data``, as huey's Serializer would find it."""
    data = bytes(data)
    if getattr(serializer, "comp", False) and data[:1] in (b"\x1f", b"\x78"):
        # gzip or zlib, as the serializer wrote it (wbits 47 reads both).
        inflate = zlib.decompressobj(47)
        data = inflate.decompress(data, MAX_INFLATED)
        if inflate.unconsumed_tail:
            raise Unreadable("inflates past %d bytes" % MAX_INFLATED)
    return data


def _message(value):
    """The args of a huey Message Call, or None."""
    if (isinstance(value, Call) and isinstance(value.func, Global)
            and tuple(value.func) == MESSAGE
            and isinstance(value.args, tuple) and len(value.args) > NAME):
        return value.args
    return None


def _head(fields):
    task_id, name = fields[ID], fields[NAME]
    return (task_id if isinstance(task_id, str) else None,
            name if isinstance(name, str) else None)


def read(serializer, data):
    """The literal of a stored value (see :func:`literal`), or UNREADABLE."""
    try:
        return literal(_inflated(serializer, data))
    except (Unreadable, zlib.error):
        return UNREADABLE


def message_head(serializer, data):
    """(task id, task name) of a queued message; (None, None) where unknown."""
    fields = _message(read(serializer, data))
    return (None, None) if fields is None else _head(fields)


def next_step(serializer, data):
    """(task id, task name) of a message's next pipeline step, or None."""
    fields = _message(read(serializer, data))
    if fields is None or len(fields) <= ON_COMPLETE:
        return None
    nxt = _message(fields[ON_COMPLETE])
    return None if nxt is None else _head(nxt)


def is_error(serializer, stored):
    """True if a stored result is huey's Error, False if something else,
    None if it cannot be read."""
    value = read(serializer, stored)
    if value is UNREADABLE:
        return None
    return isinstance(value, Call) and isinstance(value.func, Global) \
        and tuple(value.func) == ERROR
