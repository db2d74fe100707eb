"""hueyscope.queue.peek: a message's id, name, next step and result kind,
read from the pickle's opcodes without loading it."""
import gzip
import pickle

import pytest
from huey.registry import Message
from huey.serializer import Serializer
from huey.utils import Error

from hueyscope.queue import peek


class Trap:
    """Loaded, appends to a list of this module: code run by unpickling."""

    def __reduce__(self):
        return (RAN.append, ("loaded",))


RAN = []


def _message(task_id, name, args=(), on_complete=None):
    return Message(task_id, name, None, 0, 0, None, args, {"k": [1, {"x": 2}]},
                   on_complete, None, None, None)


SERIALIZERS = [
    Serializer(), Serializer(compression=True),
    Serializer(compression=True, use_zlib=True),
    Serializer(pickle_protocol=0), Serializer(pickle_protocol=2),
]


@pytest.mark.parametrize("ser", SERIALIZERS, ids=["plain", "gzip", "zlib",
                                                  "protocol 0", "protocol 2"])
def test_what_a_message_says_is_read_without_loading_it(ser):
    step = _message("next-1", "app.second", (Trap(),))
    data = ser.serialize(_message("id-1", "app.first", (Trap(), 1.5, b"x"),
                                  on_complete=step))
    assert peek.message_head(ser, data) == ("id-1", "app.first")
    assert peek.next_step(ser, data) == ("next-1", "app.second")
    assert peek.next_step(ser, ser.serialize(step)) is None
    assert peek.is_error(ser, ser.serialize(Error({"error": "x"}))) is True
    for value in (None, (1, 2), Trap(), {"a": 1}):
        assert peek.is_error(ser, ser.serialize(value)) is False
    assert RAN == []


def test_a_pickle_that_runs_code_is_only_named():
    value = peek.read(Serializer(), pickle.dumps(Trap()))
    assert isinstance(value, peek.Call) and isinstance(value.func, peek.Call)
    assert value.args == ("loaded",)
    assert RAN == []
    assert peek.message_head(Serializer(), pickle.dumps(Trap())) == (None, None)


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x80\x05N", b"\x80\x05h\x00.",
                                  pickle.dumps([1, 2]), pickle.dumps(None)])
def test_what_is_not_a_message_reads_as_unknown(data):
    assert peek.message_head(Serializer(), data) == (None, None)
    assert peek.next_step(Serializer(), data) is None


def test_a_compressed_message_is_inflated_within_a_bound():
    big = _message("id-1", "app.first", (b"\0" * (peek.MAX_INFLATED + 1),))
    ser = Serializer(compression=True, compression_level=1)
    assert peek.message_head(ser, ser.serialize(big)) == (None, None)
    assert peek.message_head(ser, gzip.compress(b"not a pickle")) == (None, None)
