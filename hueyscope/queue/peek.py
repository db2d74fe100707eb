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
    machine = _Machine()
    try:
        for n, (op, arg, _) in enumerate(pickletools.genops(data)):
            if n > MAX_OPS:
                raise Unreadable("too long")
            if op.name == "STOP":
                return machine.result()
            step = _STEPS.get(op.name)
            if step is None:
                raise Unreadable("opcode %s" % op.name)
            step(machine, op.name, arg)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise Unreadable(str(exc))
    raise Unreadable("no STOP")


class _Machine:
    """The pickle machine's stack and memo, one method a kind of opcode.

    Each step takes the opcode's name and argument, as pickletools decodes
    them; what would import, look up or call something builds a Global or
    a Call instead.
    """

    def __init__(self):
        self.stack, self.memo = [], {}

    def result(self):
        if len(self.stack) != 1:
            raise Unreadable("stack not single at STOP")
        return self.stack[0]

    def pop_mark(self):
        items = []
        while True:
            if not self.stack:
                raise Unreadable("no mark")
            item = self.stack.pop()
            if item is _MARK:
                return items[::-1]
            items.append(item)

    def extend(self, items):
        target = self.stack[-1]
        if not isinstance(target, list):
            raise Unreadable("not a list or dict")
        target.extend(items)

    # -- values ----------------------------------------------------------------

    def push_argument(self, name, arg):
        self.stack.append(arg)

    def push_constant(self, name, arg):
        self.stack.append(_CONSTANTS[name])

    def push_mark(self, name, arg):
        self.stack.append(_MARK)

    def push_opaque(self, name, arg):
        # A value of a kind never needed here (a set, a persistent id, an
        # extension code, an out-of-band buffer).
        if name == "BINPERSID":
            self.stack.pop()
        self.stack.append(_OPAQUE)

    def ignore(self, name, arg):
        pass

    # -- containers ------------------------------------------------------------

    def small_tuple(self, name, arg):
        size = int(name[-1])
        if len(self.stack) < size:
            raise Unreadable("short stack")
        items = tuple(self.stack[-size:])
        del self.stack[-size:]
        self.stack.append(items)

    def tuple(self, name, arg):
        self.stack.append(tuple(self.pop_mark()))

    def empty_list(self, name, arg):
        self.stack.append([])

    def list_or_dict(self, name, arg):
        items = self.pop_mark()
        self.stack.append(items if name == "LIST" else
                          list(zip(items[::2], items[1::2])))

    def append(self, name, arg):
        self.extend([self.stack.pop()])

    def appends(self, name, arg):
        self.extend(self.pop_mark())

    def setitem(self, name, arg):
        value, key = self.stack.pop(), self.stack.pop()
        self.extend([(key, value)])

    def setitems(self, name, arg):
        items = self.pop_mark()
        self.extend(list(zip(items[::2], items[1::2])))

    def frozenset(self, name, arg):
        self.pop_mark()
        self.stack.append(_OPAQUE)

    def drop_mark(self, name, arg):  # ADDITEMS, POP_MARK
        self.pop_mark()

    # -- the memo and the stack --------------------------------------------------

    def memoize(self, name, arg):
        self.memo[len(self.memo)] = self.stack[-1]

    def put(self, name, arg):
        self.memo[arg] = self.stack[-1]

    def get(self, name, arg):
        self.stack.append(self.memo[arg])

    def pop(self, name, arg):  # POP, and BUILD: the state set on the object below
        self.stack.pop()

    def dup(self, name, arg):
        self.stack.append(self.stack[-1])

    # -- names and calls: never looked up, never called --------------------------

    def global_(self, name, arg):
        module, _, attr = arg.partition(" ")
        self.stack.append(Global(module, attr))

    def stack_global(self, name, arg):
        attr, module = self.stack.pop(), self.stack.pop()
        self.stack.append(Global(module, attr))

    def reduce(self, name, arg):  # REDUCE, NEWOBJ
        args, func = self.stack.pop(), self.stack.pop()
        self.stack.append(Call(func, args))

    def newobj_ex(self, name, arg):
        self.stack.pop()  # keyword arguments
        self.reduce(name, arg)

    def obj(self, name, arg):
        items = self.pop_mark()
        self.stack.append(Call(items[0], tuple(items[1:])) if items else _OPAQUE)

    def inst(self, name, arg):
        module, _, attr = arg.partition(" ")
        self.stack.append(Call(Global(module, attr), tuple(self.pop_mark())))


def _steps():
    steps = dict.fromkeys(_LITERALS, _Machine.push_argument)
    steps.update(dict.fromkeys(_CONSTANTS, _Machine.push_constant))
    steps.update(dict.fromkeys(_IGNORED, _Machine.ignore))
    for names, step in (
            (("MARK",), _Machine.push_mark),
            (("EMPTY_SET", "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4",
              "NEXT_BUFFER", "READONLY_BUFFER"), _Machine.push_opaque),
            (("TUPLE1", "TUPLE2", "TUPLE3"), _Machine.small_tuple),
            (("TUPLE",), _Machine.tuple),
            (("EMPTY_LIST", "EMPTY_DICT"), _Machine.empty_list),
            (("LIST", "DICT"), _Machine.list_or_dict),
            (("APPEND",), _Machine.append),
            (("APPENDS",), _Machine.appends),
            (("SETITEM",), _Machine.setitem),
            (("SETITEMS",), _Machine.setitems),
            (("FROZENSET",), _Machine.frozenset),
            (("ADDITEMS", "POP_MARK"), _Machine.drop_mark),
            (("MEMOIZE",), _Machine.memoize),
            (("PUT", "BINPUT", "LONG_BINPUT"), _Machine.put),
            (("GET", "BINGET", "LONG_BINGET"), _Machine.get),
            (("POP", "BUILD"), _Machine.pop),
            (("DUP",), _Machine.dup),
            (("GLOBAL",), _Machine.global_),
            (("STACK_GLOBAL",), _Machine.stack_global),
            (("REDUCE", "NEWOBJ"), _Machine.reduce),
            (("NEWOBJ_EX",), _Machine.newobj_ex),
            (("OBJ",), _Machine.obj),
            (("INST",), _Machine.inst)):
        steps.update(dict.fromkeys(names, step))
    return steps


# Opcode name -> the step that carries it out; an opcode not here is Unreadable.
_STEPS = _steps()


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
