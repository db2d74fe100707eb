"""Values as a column takes them: hueyscope.storable's safe forms."""
import json
import sqlite3

import pytest

from hueyscope import storable

SURROGATE = json.loads('"\\ud800"')


class BadRepr:
    def __repr__(self):
        raise ValueError("no repr today")


class NotTextRepr:
    def __repr__(self):
        return 42


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("boom")


class Text(str):
    pass


@pytest.mark.parametrize("value,expected", [
    ("plain", "plain"),
    ("café", "café"),
    ("name-" + SURROGATE, "name-\\ud800"),
    (None, None),
    (7, 7),
    (b"\xff", b"\xff"),
])
def test_text_escapes_lone_surrogates_only(value, expected):
    assert storable.text(value) == expected


def test_text_returns_encodable_text_itself():
    value = "déjà vu"
    assert storable.text(value) is value


def test_an_escaped_surrogate_decodes_back_inside_json():
    assert json.loads('"%s"' % storable.text(SURROGATE)) == SURROGATE


@pytest.mark.parametrize("value,expected", [
    (BadRepr(), "<unrepresentable BadRepr: ValueError: no repr today>"),
    (NotTextRepr(), "<unrepresentable NotTextRepr: TypeError: __repr__ returned non-string "
     "(type int)>"),
    ([1, "a"], "[1, 'a']"),
])
def test_repr_of_never_raises(value, expected):
    assert storable.repr_of(value) == expected


@pytest.mark.parametrize("value,expected", [
    (BadStr(), "<unrepresentable BadStr: RuntimeError: boom>"),
    (ValueError("bad input"), "bad input"),
])
def test_str_of_never_raises(value, expected):
    assert storable.str_of(value) == expected


@pytest.mark.parametrize("value,expected", [
    (None, None),
    (True, 1),
    (1.5, 1.5),
    ((1 << 63) - 1, (1 << 63) - 1),
    (1 << 63, str(1 << 63)),
    (-(1 << 63) - 1, str(-(1 << 63) - 1)),
    (bytearray(b"ab"), b"ab"),
    (memoryview(b"cd"), b"cd"),
    (Text("sub"), "sub"),
    ("x" + SURROGATE, "x\\ud800"),
    ({"a": 1}, "{'a': 1}"),
    (BadRepr(), "<unrepresentable BadRepr: ValueError: no repr today>"),
])
def test_scalar(value, expected):
    out = storable.scalar(value)
    assert out == expected
    assert type(out) is type(expected)


def test_every_scalar_is_taken_by_sqlite():
    values = [None, True, 1 << 70, 2.5, bytearray(b"z"), Text("t"),
              SURROGATE, BadRepr(), object()]
    conn = sqlite3.connect(":memory:")
    conn.execute("create table t (v)")
    conn.executemany("insert into t values (?)", [(v,) for v in storable.row(values)])
    assert conn.execute("select count(*) from t").fetchone() == (len(values),)


def test_mapping_keeps_none_and_keys():
    assert storable.mapping(None) is None
    assert storable.mapping({"n": 1 << 64, "s": SURROGATE}) == {
        "n": str(1 << 64), "s": "\\ud800"}
