"""Error fingerprints: the same failure groups together, a different one does not."""
import pytest

from hueyscope.signals import fingerprint


def _traceback(fail):
    try:
        fail()
    except Exception as exc:
        return exc.__traceback__


def fails_here():
    raise ValueError("x")


def fails_there():
    raise ValueError("x")


@pytest.mark.parametrize("a,b", [
    ("timeout after 3.2s", "timeout after 4.7s"),
    ("row 12 of 40", "row 7 of 9"),
    ("object at 0x7f3a2b1c", "object at 0xdeadbeef"),
    ("task 0f8fad5b-d9cb-469f-a165-70867728950e",
     "task 7c9e6679-7425-40de-944b-e07fc1f90ae7"),
    ("missing key 'alpha'", "missing key 'beta'"),
    ('missing key "alpha"', 'missing key "beta"'),
])
def test_messages_that_differ_in_values_group_together(a, b):
    assert fingerprint("E", a, None) == fingerprint("E", b, None)


@pytest.mark.parametrize("a,b", [
    (("TimeoutError", "late"), ("ValueError", "late")),
    (("E", "disk full"), ("E", "disk gone")),
    (("E", "x" * 500 + "a"), ("E", "y" * 500 + "a")),
])
def test_different_failures_do_not_group(a, b):
    assert fingerprint(*a, None) != fingerprint(*b, None)


def test_a_message_past_500_characters_does_not_split_a_group():
    assert fingerprint("E", "x" * 500 + "a", None) == \
        fingerprint("E", "x" * 500 + "b", None)


def test_the_innermost_frame_is_part_of_it():
    here, there = _traceback(fails_here), _traceback(fails_there)
    assert fingerprint("ValueError", "x", here) == \
        fingerprint("ValueError", "x", _traceback(fails_here))
    assert fingerprint("ValueError", "x", here) != \
        fingerprint("ValueError", "x", there)
    assert fingerprint("ValueError", "x", here) != fingerprint("ValueError", "x", None)


@pytest.mark.parametrize("message", [None, "", "\ud800"])
def test_any_message_gives_a_short_hex_key(message):
    key = fingerprint(None, message, None)
    assert len(key) == 16 and int(key, 16) >= 0
