"""Secrets in every position a task can carry them: the probe corpus.

Each probe holds its own secret, a string found nowhere else, so a byte
search of a file for it says whether that probe leaked. Imported by
tests/secrets_app.py (whose tasks take and raise them) and by the tests.
"""
import base64
import collections
import dataclasses


def secret(n):
    return "Pr0beS%02dqZ7w" % n


@dataclasses.dataclass
class Creds:
    user: str
    password: str


Pair = collections.namedtuple("Pair", "user api_key")


def nested(depth, leaf):
    for i in range(depth):
        leaf = {"level%d" % i: leaf}
    return leaf


BASIC = base64.b64encode(("bob:" + secret(20)).encode()).decode()

# (name, args, kwargs) of the calls: each argument position is used.
CALLS = [
    ("exact key", (), {"password": secret(1)}),
    ("API-KEY", (), {"API-KEY": secret(2)}),
    ("access_token", (), {"access_token": secret(3)}),
    ("X-Api-Key", ({"headers": {"X-Api-Key": secret(4)}},), {}),
    ("Cookie", (), {"Cookie": "theme=dark; sid=" + secret(5)}),
    ("Authorization header", ({"Authorization": "Bearer " + secret(6)},), {}),
    ("bearer in a string", ("sent with Authorization: Bearer " + secret(7),), {}),
    ("URL userinfo", ("https://svc:%s@api.example.com/v1" % secret(8),), {}),
    ("dataclass", (Creds("bob", secret(9)),), {}),
    ("nine dicts deep", (nested(9, {"token": secret(10)}),), {}),
    ("beyond the depth limit", (), {"tree": nested(40, {"note": secret(11)})}),
    ("database URL", ("postgres://app:%s@db:5432/app" % secret(12),), {}),
    ("apiKey", (), {"apiKey": secret(13)}),
    ("client_secret", (), {"oauth": {"client_secret": secret(14)}}),
    ("Set-Cookie", (), {"Set-Cookie": "sid=%s; HttpOnly" % secret(15)}),
    ("password= in text", ("login?user=bob&password=%s" % secret(16),), {}),
    ("token: in text", ("token: %s" % secret(17),), {}),
    ("namedtuple", (Pair("bob", secret(18)),), {}),
    ("dict repr in text", (repr({"api_key": secret(19)}),), {}),
    ("Basic in bytes", (b"Authorization: Basic " + BASIC.encode(),), {}),
    ("session", (), {"session": secret(21)}),
    ("private_key", (), {"Private-Key": secret(22)}),
    ("redis dsn", (), {"dsn": "redis://:%s@localhost:6379/0" % secret(23)}),
    ("a set under a key", (), {"passwords": {secret(24)}}),
    ("lower-case bearer", ("bearer " + secret(25),), {}),
    ("JSON in a string", ('{"refresh_token": "%s", "n": 1}' % secret(26),), {}),
    ("credentials dict", (), {"credentials": {"user": "u", "pw": secret(27)}}),
    ("list of headers", ([["Proxy-Authorization", "Basic " + BASIC]],), {}),
]

# The errors the failing task raises, by probe number: message, and the
# cause it is raised from (tracebacks show both).
ERROR = ("POST https://svc:%s@api.example.com/v1 failed with Authorization: "
         "Bearer %s" % (secret(30), secret(31)))
CAUSE = "lookup failed: password=%s, config=%r" % (
    secret(32), {"api_key": secret(33)})

SECRETS = [secret(n) for n in list(range(1, 28)) + [30, 31, 32, 33]] + [BASIC]
# What must stay readable beside them.
ORDINARY = ["bob-stays-visible", "token_count"]
