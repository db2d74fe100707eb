"""Redaction (hueyscope.redaction): a corpus of secrets in every position.

Each probe carries one secret (a string that appears nowhere else); the
redacted form must not contain it, as a structure's JSON or as text, and
must keep what is not secret readable.
"""
import collections
import dataclasses
import json

import pytest

from hueyscope.events.capture import _dump
from hueyscope.redaction import (DEEP, DEFAULT, MARK, MAX_DEPTH, Redaction,
                                 keys_of, normalise)

S = "s3cr3tV4lue"  # the secret of every probe


@dataclasses.dataclass
class Creds:
    user: str
    password: str


Pair = collections.namedtuple("Pair", "user api_key")


def _nested(depth, leaf):
    value = leaf
    for i in range(depth):
        value = {"level%d" % i: value}
    return value


# Structures: (name, value). Every one holds S and must lose it.
STRUCTURES = [
    ("exact key", {"password": S}),
    ("upper case", {"PASSWORD": S}),
    ("API-KEY", {"API-KEY": S}),
    ("api_key", {"api_key": S}),
    ("apiKey", {"apiKey": S}),
    ("X-Api-Key header", {"headers": {"X-Api-Key": S}}),
    ("access_token", {"access_token": S}),
    ("refresh-token", {"refresh-token": S}),
    ("Cookie", {"Cookie": "sid=" + S}),
    ("Set-Cookie", {"Set-Cookie": "sid=%s; HttpOnly" % S}),
    ("session", {"session": S}),
    ("client_secret", {"client_secret": S}),
    ("private_key", {"private_key": S}),
    ("db_password suffix", {"db_password": S}),
    ("passwd", {"passwd": S}),
    ("dsn", {"DSN": "postgresql://app:%s@db/app" % S}),
    ("credentials dict", {"credentials": {"user": "bob", "pw": S}}),
    ("plural key", {"secrets": [S]}),
    ("a number under a secret key", {"token": int(S.encode().hex(), 16)}),
    ("Authorization in a list", [{"Authorization": "Bearer " + S}]),
    ("bearer in a string value", {"note": "sent with Authorization: Bearer " + S}),
    ("bare bearer", ["bearer " + S]),
    ("URL userinfo", ["https://svc:%s@api.example.com/v1" % S]),
    ("URL token userinfo", ["https://%s@github.com/org/repo.git" % S]),
    ("redis URL", {"url": "redis://:%s@localhost:6379/0" % S}),
    ("password with @", ["postgres://u:p@%s@db/x" % S]),
    ("query string", ["https://api.example.com/v1?api_key=%s&page=2" % S]),
    ("key=value in text", ["connect host=db password=%s user=bob" % S]),
    ("key: value in text", ["token: %s" % S]),
    ("JSON inside a string", ['{"client_secret": "%s", "n": 1}' % S]),
    ("dict repr in a string", [repr({"api_key": S})]),
    ("dataclass", [Creds("bob", S)]),
    ("namedtuple", [Pair("bob", S)]),
    ("tuple key", {("a", "b"): {"secret": S}}),
    ("secret in a set", {"password": {S}}),
    ("bytes", [b"Authorization: Bearer " + S.encode()]),
    ("nine dicts deep", _nested(9, {"password": S})),
    ("twenty deep", _nested(20, {"api-key": S})),
    ("beyond the depth limit", _nested(MAX_DEPTH + 5, {"note": S})),
    ("deep lists", [[[[[[[[[[{"Token": S}]]]]]]]]]]),
    ("JWT", ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIx%s.c2lnbmF0dXJl" % S]),
    ("GitHub token", ["ghp_%s0123456789abcdef0123" % S]),
    ("PEM private key", ["-----BEGIN PRIVATE KEY-----\nMII%s\n"
                         "-----END PRIVATE KEY-----" % S]),
    ("Basic credentials", ["Basic " + __import__("base64").b64encode(
        ("bob:" + S).encode()).decode()]),
]


def _secret_gone(text, secret=S):
    """Neither the secret nor a large part of it (a cut one) is in ``text``."""
    return secret[2:-2] not in text and str(int(S.encode().hex(), 16)) not in text


@pytest.mark.parametrize("name, value", STRUCTURES, ids=[n for n, _ in STRUCTURES])
def test_no_secret_survives_in_a_structure(name, value):
    copied = DEFAULT.value(value)
    stored = json.dumps(copied)
    assert _secret_gone(stored), stored
    # As the recorder stores them too, whatever the length limit.
    for limit in (0, 2000, 40):
        assert _secret_gone(_dump(value, DEFAULT, limit))
    # Redacting again changes nothing: what is shown of a store is redacted
    # once more on the way out.
    assert DEFAULT.value(copied) == copied
    assert DEFAULT.text(stored) == stored


def test_a_recursive_structure_is_cut_not_repeated():
    loop = [S]
    loop.append(loop)
    d = {"api_key": S}
    d["self"] = d
    assert DEFAULT.value([loop, d]) == [
        [S, "[...]"], {"api_key": MARK, "self": "{...}"}]


def test_beyond_the_depth_limit_the_rest_is_a_marker():
    value = _nested(MAX_DEPTH + 3, "plain")
    out = DEFAULT.value(value)
    for _ in range(MAX_DEPTH):
        (out,) = out.values()
    assert out == DEEP


# Text: (name, text). Every one holds S.
TEXTS = [
    ("error with URL and bearer",
     "POST https://svc:%s@api.example.com/x failed with Authorization: "
     "Bearer %s" % (S, S[::-1])),
    ("Authorization header line", "Authorization: Bearer %s\nAccept: */*" % S),
    ("lower-case bearer", "bearer %s" % S),
    ("Proxy-Authorization", "Proxy-Authorization: Basic %s" % S),
    ("Authorization digest", 'Authorization: Digest username="bob", response="%s"' % S),
    ("Cookie header", "Cookie: theme=dark; sid=%s" % S),
    ("Set-Cookie header", "Set-Cookie: sid=%s; Path=/; HttpOnly" % S),
    ("X-Api-Key header", "X-Api-Key: %s" % S),
    ("password=", "login failed: password=%s" % S),
    ("quoted password", "password='%s'" % S),
    ("double-quoted, escaped quote", 'password="a\\"%s"' % S),
    ("invalid api key:", "invalid api key: %s" % S),
    ("token ==", "assert token == '%s'" % S),
    ("repr of kwargs", "{'user': 'bob', 'access_token': '%s'}" % S),
    ("nested value", "config={'credentials': {'user': 'a', 'pw': '%s'}}" % S),
    ("escaped JSON in a repr", 'body="{\\"password\\": \\"%s\\"}"' % S),
    ("dataclass repr", repr(Creds("bob", S))),
    ("traceback", 'Traceback (most recent call last):\n  File "t.py", line 3, in '
     'f\n    connect(dsn)\nConnectionError: could not connect to '
     'postgresql://app:%s@db:5432/app' % S),
    ("mysql URL", "mysql+pymysql://root:%s@127.0.0.1/db" % S),
    ("amqp URL, no user", "amqp://:%s@rabbit//" % S),
    ("sk- key", "OpenAI error for key sk-%s0123456789abcdef" % S),
    ("AWS key id", "AKIA%s" % "ABCDEFGHIJKLMNOP"),
]


@pytest.mark.parametrize("name, text", TEXTS, ids=[n for n, _ in TEXTS])
def test_no_secret_survives_in_text(name, text):
    secret = "ABCDEFGHIJKLMNOP" if name == "AWS key id" else S
    out = DEFAULT.text(text)
    assert _secret_gone(out, secret), out
    assert _secret_gone(out, secret[::-1]), out
    assert DEFAULT.text(out) == out  # idempotent
    assert MARK in out


@pytest.mark.parametrize("text, expected", [
    ("POST https://svc:pw@api.example.com/x failed with Authorization: Bearer t0k",
     "POST https://svc:***@api.example.com/x failed with Authorization: Bearer ***"),
    ("https://tok@github.com/o/r", "https://***@github.com/o/r"),
    ("login password=pw user=bob", "login password=*** user=bob"),
    ("Cookie: a=1; b=2\nHost: x", "Cookie: ***\nHost: x"),
    ("Creds(user='bob', password='pw')", "Creds(user='bob', password='***')"),
    ("{'api_key': 'k', 'n': 1}", "{'api_key': '***', 'n': 1}"),
])
def test_what_stays_readable_around_a_secret(text, expected):
    assert DEFAULT.text(text) == expected


@pytest.mark.parametrize("text", [
    "hello world", "time: 12:30", "token_count: 3", "session_id=42",
    "the basic settings are wrong", "https://example.com/a@b",
    "mailto:bob@example.com", "ratio=0.5, user=bob", "Error: not found",
    "tokenizer: bpe", "https://example.com:8443/path?page=2",
])
def test_ordinary_text_is_left_alone(text):
    assert DEFAULT.text(text) == text


@pytest.mark.parametrize("value", [
    {"token_count": 3, "session_id": 7, "user": "bob", "host": "db1"},
    {"keyboard": "qwerty", "author": "ann", "passed": True},
    [1, 2.5, None, True, "plain text", {"nested": ["a", "b"]}],
])
def test_ordinary_values_are_left_alone(value):
    assert DEFAULT.value(value) == json.loads(json.dumps(value))


@pytest.mark.parametrize("key", [
    "password", "Password", "PASSWORD", "API-KEY", "api_key", "X-Api-Key",
    "apiKey", "api key", "access_token", "AccessToken", "refresh_token",
    "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
    "session", "user_session", "private_key", "client_secret", "dsn",
    "SENTRY_DSN", "credentials", "secret_key", "aws_secret_access_key",
    "passwd", "tokens", "secrets", "auth", "oauth_token",
])
def test_secret_keys(key):
    assert DEFAULT.secret_key(key)


@pytest.mark.parametrize("key", [
    "token_count", "session_id", "user", "keyboard", "author", "passed",
    "tokenizer", "description", "", 3, None,
])
def test_ordinary_keys(key):
    assert not DEFAULT.secret_key(key)


def test_the_key_list_is_extended_and_trimmed():
    assert normalise("X-Api_Key. ") == "xapikey"
    keys = keys_of("Seed, -session,, PIN-code")
    assert "seed" in keys and "pincode" in keys and "session" not in keys
    assert keys_of("") == keys_of(None) == keys_of(())
    redaction = Redaction("seed,-session")
    assert redaction.value({"seed": 1, "session": "s", "token": "t"}) == {
        "seed": MARK, "session": "s", "token": MARK}
    assert redaction.text("seed=42 session=abc") == "seed=*** session=abc"
    # Text credentials do not depend on the key list.
    assert Redaction("-token,-authorization").text("Bearer abc") == "Bearer ***"
    assert Redaction.of(redaction) is redaction


def test_error_messages_are_scrubbed_before_they_are_cut():
    # A secret across the cut is still recognised: the cut comes after.
    message = "x" * 3990 + " https://u:%s@host/" % S
    stored = DEFAULT.message(message)
    assert len(stored) <= 4000 and _secret_gone(stored)
    tb = "Bearer %s\n" % S + "y" * 25000
    assert _secret_gone(DEFAULT.traceback("z" * 10 + tb))
    assert len(DEFAULT.traceback(tb)) == 20000


def test_huge_and_wide_values_are_bounded():
    wide = {"k%d" % i: [i] for i in range(60_000)}
    out = DEFAULT.value(wide)
    assert len(out) == 60_000 and "<redacted: more than" in json.dumps(out)


# -- the failed set ------------------------------------------------------------

def test_the_failed_set_keeps_and_lists_reasons_redacted(tmp_path):
    """A task failing for good with credentials in its error: its reason is
    redacted in the file, and an entry written in clear (by an earlier
    version) is listed redacted."""
    from hueyscope.queue import failed
    from unit_helpers import make_queue, rows

    huey = make_queue(tmp_path / "queue.db")
    try:
        @huey.task(retries=0)
        def call_api():
            raise ConnectionError("POST https://svc:%s@api.example.com failed "
                                  "with Authorization: Bearer %s" % (S, S[::-1]))

        call_api()
        huey.execute(huey.dequeue())
        stored = rows(huey.storage.filename,
                      "select reason, fingerprint from hueyscope_dead_letter")
        reason = ("ConnectionError: POST https://svc:***@api.example.com "
                  "failed with Authorization: Bearer ***")
        assert [r for r, _ in stored] == [reason]
        assert stored[0][1]  # the store's own, see tests/test_secrets.py
        with huey.storage.db(commit=True) as curs:
            curs.execute("update hueyscope_dead_letter set reason = ?",
                         ("KeyError: password=%s" % S,))
        (entry,) = failed.select(huey)
        assert entry["reason"] == "KeyError: password=***"
    finally:
        huey.storage.close()
