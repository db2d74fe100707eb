"""What browse and metrics --serve answer, and to whom; what SQL they refuse.

Pure parts: the Host allow-list, the Basic password check, the SQLite
authorizer on a real in-memory connection, and the metrics exposition's
sharing of one computation between scrapes (with a stand-in registry, a
prometheus-client interface, run on real threads).
"""
import base64
import sqlite3
import threading

import pytest

from hueyscope.metrics.server import Exposition
from hueyscope.metrics.store import Deadline, TimeLimitExceeded
from hueyscope.readonly import deny_dangerous
from hueyscope.serving import HostNames, basic_auth_ok, host_name, is_loopback

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("header, name", [
    ("127.0.0.1:8001", "127.0.0.1"), ("localhost", "localhost"),
    ("[::1]:8001", "::1"), ("[::1]", "::1"), ("Example.ORG:80", "example.org"),
    ("example.org.", "example.org"), ("::1", "::1"),
])
def test_host_name_of_a_header(header, name):
    assert host_name(header) == name


def test_a_loopback_bind_answers_loopback_names_only():
    hosts = HostNames("127.0.0.1")
    for header in ("127.0.0.1:8001", "localhost:8001", "LOCALHOST", "[::1]:8001",
                   None):
        assert hosts.allows(header), header
    # A rebinding page's own name, even one that resolves to 127.0.0.1.
    for header in ("attacker.example", "attacker.example:8001",
                   "127.0.0.1.nip.io:8001", "10.0.0.5:8001", ""):
        assert not hosts.allows(header), header
    assert "--allow-host" in hosts.refusal("attacker.example")


def test_a_named_bind_answers_its_name_and_the_allowed_ones():
    hosts = HostNames("192.168.1.5", ["tasks.example.org", "Proxy.Internal:443"])
    for header in ("192.168.1.5:8001", "tasks.example.org", "proxy.internal"):
        assert hosts.allows(header), header
    for header in ("localhost:8001", "127.0.0.1", "192.168.1.6", "evil.example"):
        assert not hosts.allows(header), header


def test_a_wildcard_bind_answers_addresses_and_this_machines_names():
    import socket

    hosts = HostNames("0.0.0.0")
    for header in ("127.0.0.1:9808", "localhost", "10.1.2.3:9808",
                   "[fe80::1]:9808", socket.gethostname()):
        assert hosts.allows(header), header
    assert not hosts.allows("attacker.example:9808")
    assert HostNames("::").allows("[::1]:1")
    assert HostNames("127.0.0.1", ["*"]).allows("anything.example")


def test_is_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]",
                                 "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", "10.0.0.1",
                                     "example.org"]))


def _basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def test_basic_auth_checks_the_password_whatever_the_user():
    assert basic_auth_ok(_basic("anyone", "s3cret:x"), "s3cret:x")
    assert basic_auth_ok(_basic("", "s3cret:x"), "s3cret:x")
    assert basic_auth_ok(_basic("é", "pässword"), "pässword")
    for header in (None, "", _basic("u", "wrong"), _basic("u", ""),
                   "Bearer s3cret", "Basic !!!", "Basic " + base64.b64encode(
                       b"no-colon").decode()):
        assert not basic_auth_ok(header, "s3cret:x"), header


def test_deny_dangerous_refuses_fts3_tokenizer_and_load_extension():
    conn = sqlite3.connect(":memory:")
    # This SQLite build answers a pointer into itself without the authorizer.
    assert isinstance(conn.execute("select fts3_tokenizer('simple')").fetchone()[0],
                      bytes)
    conn.execute("create view v as select fts3_tokenizer('simple') as p")
    deny_dangerous(conn)
    for sql in ("select fts3_tokenizer('simple')",
                "select FTS3_TOKENIZER('simple', x'00')",
                "select * from v",  # through a view that came with a file
                "select load_extension('libnope')"):
        # (SQLite itself refuses the view: "unsafe use of fts3_tokenizer()".)
        with pytest.raises(sqlite3.DatabaseError,
                           match="not authorized|unsafe use"):
            conn.execute(sql)
    # Everything else a reader needs still works.
    conn.execute("create table t (a)")
    conn.execute("insert into t values (1)")
    assert conn.execute("select count(*), max(a) from t").fetchone() == (1, 1)
    assert conn.execute("pragma table_info(t)").fetchall()
    assert conn.execute("select json_extract('[1]', '$[0]')").fetchone() == (1,)


class SlowRegistry:
    """A registry whose collect() waits until released, counting calls."""

    def __init__(self):
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = None

    def collect(self):
        self.calls += 1
        self.started.set()
        assert self.release.wait(20)
        if self.fail:
            raise self.fail
        return ["families of call %d" % self.calls]


def _in_threads(fn, n):
    results = [None] * n

    def run(i):
        try:
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    return threads, results


def test_concurrent_scrapes_share_one_computation_per_interval():
    registry = SlowRegistry()
    exposition = Exposition(registry, interval=600, time_limit=20)
    try:
        threads, results = _in_threads(exposition.families, 4)
        assert registry.started.wait(20)
        registry.release.set()
        for thread in threads:
            thread.join(20)
        assert results == [["families of call 1"]] * 4
        assert exposition.families() == ["families of call 1"]
        assert registry.calls == 1
    finally:
        exposition.close()


def test_a_failed_computation_is_not_kept():
    registry = SlowRegistry()
    registry.fail = TimeLimitExceeded("took longer than 1 s")
    registry.release.set()
    exposition = Exposition(registry, interval=600, time_limit=20)
    try:
        with pytest.raises(TimeLimitExceeded):
            exposition.families()
        registry.fail = None
        assert exposition.families() == ["families of call 2"]
    finally:
        exposition.close()


def test_a_deadline_interrupts_sqlite():
    conn = sqlite3.connect(":memory:")
    deadline = Deadline(1e-9)
    never_ending = ("with recursive n(i) as (select 1 union all select i + 1 "
                    "from n) select count(*) from n")
    with pytest.raises(TimeLimitExceeded, match="longer than 1e-09 s"):
        deadline.read(lambda c: c.execute(never_ending).fetchall())(conn)
    # No limit: nothing installed, nothing raised.
    assert Deadline().read(lambda c: c.execute("select 1").fetchall())(conn) == [(1,)]


@pytest.mark.parametrize("header,actor", [
    ("Bearer aaaaaaaaaaaaaaaaaaaaaaaa", "api:A"),
    ("bearer   bbbbbbbbbbbbbbbbbbbbbbbb  ", "api:B"),
    ("Bearer aaaaaaaaaaaaaaaaaaaaaaa", None),  # one short
    ("Bearer aaaaaaaaaaaaaaaaaaaaaaaaa", None),  # one long
    ("Basic aaaaaaaaaaaaaaaaaaaaaaaa", None),
    ("Bearer ", None), ("", None), (None, None),
])
def test_an_api_token_names_its_actor(header, actor):
    from hueyscope.serving import Tokens

    tokens = Tokens({"a" * 24: "api:A", "b" * 24: "api:B"})
    assert tokens.actor(header) == actor
    assert tokens.actors == {"api:A", "api:B"} and not Tokens()


@pytest.mark.parametrize("value,says", [
    (None, "unset or empty"), ("", "unset or empty"),
    ("x" * 19, "at least 20"), (" " + "x" * 24, "at least 20"),
])
def test_a_token_from_the_environment_is_long_enough(monkeypatch, value, says):
    from hueyscope.serving import tokens_from_env

    monkeypatch.delenv("CI_TOKEN", raising=False)
    if value is not None:
        monkeypatch.setenv("CI_TOKEN", value)
    with pytest.raises(ValueError, match=says):
        tokens_from_env(["CI_TOKEN"])
    monkeypatch.setenv("CI_TOKEN", "x" * 20)
    assert tokens_from_env(["CI_TOKEN"]).actor("Bearer " + "x" * 20) == "api:CI_TOKEN"
