"""Run huey's own test suite with hueyscope's classes in place of huey's.

Usage (the runner, ``test_huey_suite.py``, starts it in a subprocess)::

    python bootstrap.py VARIANT TESTS_DIR REPORT [TEST_ID_PREFIX...]

``TESTS_DIR`` is the ``huey/tests`` folder of huey's source distribution;
test id prefixes (``test_api.TestQueue``) run only the tests they match;
``REPORT`` receives one JSON line per test: ``{"id", "outcome", "detail"}``,
outcome one of pass, fail, error, skip (and a "start" line before each test,
so a run killed mid-way still says which test it was in). The working
directory is scratch space: huey's tests write their database files there.

Substitution happens at import time, never by editing huey's files: the
names huey's test modules import (``huey.api.MemoryHuey``,
``huey.SqliteHuey``, ``huey.tests.base.MemoryHuey``,
``BaseTestCase.consumer_class``...) are rebound to hueyscope's classes, the
test modules are imported, and huey's names are restored, so that huey
itself (immediate mode, contrib helpers, test_wrappers) still sees its own
classes.
"""
import gc
import importlib
import itertools
import json
import os
import signal
import sys
import time
import traceback
import types
import unittest

import huey
import huey.api
import huey.consumer

# Seconds one of huey's tests may take before it is failed as hung (huey's
# slowest non-slow test takes about 2 s); the rest of the suite goes on.
TEST_TIMEOUT = 30
# PostgreSQL for huey's test_postgres (huey reads HUEY_PG_DSN itself).
PG_DSN_VARIABLE = "HUEY_PG_DSN"

_files = itertools.count(1)


def fresh_path(suffix=".db"):
    """A new file name in the scratch folder (the working directory)."""
    return os.path.abspath("hs-%d%s" % (next(_files), suffix))


# -- stand-ins: hueyscope's classes taking the arguments of huey's ---------

def on_fresh_file(huey_class):
    """``huey_class`` in place of MemoryHuey: each instance on a file of its own.

    MemoryHuey's options (results, utc, immediate,
    store_intermediate_errors...) are Huey's own, so they pass through; a
    fresh file is what memory of its own is to a MemoryHuey.
    """
    class OnFreshFile(huey_class):
        def __init__(self, name="huey", **kwargs):
            kwargs.setdefault("filename", fresh_path())
            super().__init__(name, **kwargs)

    OnFreshFile.__name__ = huey_class.__name__
    return OnFreshFile


def attached(huey_class):
    """``huey_class`` with the hueyscope recorder attached to each instance.

    Each instance records into an event store of its own. The writer runs
    as a thread (``writer_process=False``): a writer process per test
    instance would be hundreds of processes.
    """
    import hueyscope

    class Attached(huey_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            recorder = hueyscope.attach(
                self, events=fresh_path(".events.db"), writer_process=False)
            ATTACHED.append(recorder)

    Attached.__name__ = "Attached" + huey_class.__name__
    return Attached


ATTACHED = []  # recorders attached during the current test
OPEN_STORAGES = []  # PostgreSQL storages to close after the current test
FLUSHED = set()  # queue names emptied in the current test


def leased_postgres_class():
    """hueyscope's PostgreSQL class that ``--delivery at-least-once`` builds."""
    from hueyscope.queue.postgres import LeasedPostgresHuey

    return LeasedPostgresHuey


def leased_postgres_memory_stand_in():
    """The leased PostgreSQL class taking MemoryHuey's arguments.

    The stand-ins share one set of tables (made once, in the schema of
    HUEY_PG_DSN); each queue name starts empty in each test, as each
    MemoryHuey starts with memory of its own. Non-blocking reads, as huey's
    tests expect an empty queue to answer at once.
    """
    base = leased_postgres_class()
    made = []

    class LeasedPostgresMemoryHuey(base):
        def __init__(self, name="huey", **kwargs):
            kwargs.setdefault("dsn", os.environ[PG_DSN_VARIABLE])
            kwargs.setdefault("blocking", False)
            # Not huey's default prefix: test_postgres drops those tables.
            kwargs.setdefault("table_prefix", "hs_memory")
            kwargs.setdefault("create_tables", not made)
            super().__init__(name, **kwargs)
            made.append(True)
            if not getattr(self.storage, "leased", False):
                return  # immediate mode: huey's MemoryStorage
            if name not in FLUSHED:
                # A queue name's first use in this test: empty, as new.
                self.storage.flush_all()
                with self.storage.db(commit=True) as curs:
                    curs.execute("delete from hueyscope_lease where queue = %s",
                                 (name,))
                FLUSHED.add(name)
            OPEN_STORAGES.append(self.storage)

    return LeasedPostgresMemoryHuey


def normal_sync(huey_class):
    """``huey_class`` with SQLite's NORMAL sync unless asked otherwise.

    FULL syncs every commit: a test writing 5000 rows one by one then
    takes most of a minute on a busy disk. Durability across power loss
    is not what huey's tests check.
    """
    class NormalSync(huey_class):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("synchronous", "NORMAL")
            super().__init__(*args, **kwargs)

    NormalSync.__name__ = huey_class.__name__
    return NormalSync


def hueyscope_sqlite_class():
    """hueyscope.SqliteHuey: leased, at-least-once (leases.py)."""
    from hueyscope.queue.sqlite import SqliteHuey

    return normal_sync(SqliteHuey)


def hueyscope_at_most_once_class():
    """What ``--delivery at-most-once`` builds (queue.py)."""
    from hueyscope.queue import DurableSqliteHuey

    return normal_sync(DurableSqliteHuey)


def hueyscope_consumer_class():
    from hueyscope.consumer.runner import Consumer

    return Consumer


# -- variants: which huey name becomes which class -------------------------

def _leased():
    leased = hueyscope_sqlite_class()
    return {"MemoryHuey": on_fresh_file(leased), "SqliteHuey": leased}


def _at_most_once():
    at_most_once = hueyscope_at_most_once_class()
    return {"MemoryHuey": on_fresh_file(at_most_once),
            "SqliteHuey": at_most_once}


def _attached():
    leased = hueyscope_sqlite_class()
    return {"MemoryHuey": attached(on_fresh_file(leased)),
            "SqliteHuey": attached(leased)}


def _postgres():
    return {"PostgresHuey": leased_postgres_class()}


def _postgres_memory():
    return {"MemoryHuey": leased_postgres_memory_stand_in()}


def _consumer():
    return dict(_leased(), Consumer=hueyscope_consumer_class())


VARIANTS = {
    "leased": _leased,
    "at-most-once": _at_most_once,
    "attached": _attached,
    "consumer": _consumer,
    "postgres": _postgres,
    "postgres-memory": _postgres_memory,
}
# Variants that need only some of huey's test modules.
MODULES = {"postgres": ["test_postgres"]}

# huey's tests of huey's own storages, which involve no class of ours:
# reported as skipped. They would also share servers and files between
# variants run at once (the same Redis keys, /tmp/huey-sqlite.db, the
# same tables in test_postgres's database).
UNRELATED = {
    "test_storage.TestRedisStorage": "huey's RedisStorage",
    "test_storage.TestRedisStorageWaitResult": "huey's RedisStorage",
    "test_storage.TestRedisExpireStorage": "huey's RedisExpireStorage",
    "test_storage.TestPriorityRedisStorage": "huey's PriorityRedisStorage",
    "test_storage.TestPriorityRedisStorageNotBlocking":
        "huey's PriorityRedisStorage",
    "test_storage.TestRedisStorageOffline": "huey's RedisStorage",
    "test_storage.TestCySqliteStorage": "huey's CySqliteStorage",
    "test_storage.TestFileStorageMethods": "huey's FileStorage",
    "test_storage.TestValkeyGlideStorage": "huey's ValkeyGlideStorage",
    "test_helpers.TestLockTaskSemaphore": "huey's RedisStorage",
    "test_sql_huey.TestSqlStorage": "huey's SqlStorage (peewee)",
    "test_postgres.TestPostgresStorage": "huey's PostgresStorage "
                                         "(the postgres variants replace it)",
}


def unrelated_reason(test_id, substitutions):
    """Why ``test_id`` involves no class of ours, or None."""
    cls = ".".join(test_id.split(".")[:2])
    if cls == "test_postgres.TestPostgresStorage" and \
            "PostgresHuey" in substitutions:
        return None
    if cls in UNRELATED:
        return "tests %s only, no hueyscope class" % UNRELATED[cls]
    return None


# -- loading huey's tests with the substitutions in place -------------------

def load_tests(tests_dir, substitutions, only=None, selected=()):
    """Import huey's test modules from ``tests_dir`` as ``huey.tests``.

    The names are rebound in huey's modules (and huey.tests.base) while
    the test modules import them, then huey's are put back.
    """
    package = types.ModuleType("huey.tests")
    package.__path__ = [tests_dir]
    package.__file__ = os.path.join(tests_dir, "__init__.py")
    sys.modules["huey.tests"] = package
    huey.tests = package

    holders = [huey, huey.api, huey.consumer]
    saved = [(holder, name, getattr(holder, name))
             for holder in holders for name in substitutions
             if hasattr(holder, name)]
    try:
        for holder, name, _ in saved:
            setattr(holder, name, substitutions[name])
        base = importlib.import_module("huey.tests.base")
        for name, cls in substitutions.items():
            if hasattr(base, name):
                setattr(base, name, cls)
        if "Consumer" in substitutions:
            base.BaseTestCase.consumer_class = substitutions["Consumer"]
        names = sorted(f[:-3] for f in os.listdir(tests_dir)
                       if f.startswith("test_") and f.endswith(".py"))
        if only:
            names = [n for n in names if n in only]
        modules = [importlib.import_module("huey.tests." + n) for n in names]
    finally:
        for holder, name, original in saved:
            setattr(holder, name, original)
    stats = sys.modules.get("huey.tests.test_stats")
    if stats is not None and hasattr(stats, "StatsTestCase"):
        # Not /tmp/huey-stats.db: variants run at once, each in its folder.
        stats.StatsTestCase.db_file = os.path.abspath("huey-stats.db")
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite()
    for test in _flatten(loader.loadTestsFromModule(m) for m in modules):
        test_id = test.id().replace("huey.tests.", "", 1)
        if selected and not test_id.startswith(tuple(selected)):
            continue
        reason = unrelated_reason(test_id, substitutions)
        if reason is not None:
            test = _Unrelated(test_id, reason)
        suite.addTest(test)
    return suite


def _flatten(suites):
    for suite in suites:
        if isinstance(suite, unittest.TestSuite):
            yield from _flatten(suite)
        else:
            yield suite


class _Unrelated(unittest.TestCase):
    """Stands for one of huey's tests that is not run: reported as skipped."""

    def __init__(self, test_id, reason):
        super().__init__("runTest")
        self._test_id, self._reason = test_id, reason

    def id(self):
        return self._test_id

    def runTest(self):
        self.skipTest(self._reason)


# -- running: one JSON line per test ----------------------------------------

class TestTimedOut(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimedOut("test still running after %d s" % TEST_TIMEOUT)


class LineResult(unittest.TestResult):
    """Writes each test's outcome as a JSON line as soon as it is known."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def _id(self, test):
        return test.id().replace("huey.tests.", "", 1)

    def _line(self, test, outcome, detail=""):
        line = {"id": self._id(test), "outcome": outcome, "detail": detail}
        if outcome != "start":
            line["seconds"] = round(time.monotonic() - self._started, 3)
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def startTest(self, test):
        super().startTest(test)
        self._started = time.monotonic()
        self._line(test, "start")
        self._outcome = None
        signal.alarm(TEST_TIMEOUT)

    def stopTest(self, test):
        signal.alarm(0)
        detail = self._check_recorders()
        self._close_storages()
        if detail and self._outcome is None:
            self._outcome = ("fail", detail)
        outcome, text = self._outcome or ("pass", "")
        self._line(test, outcome, text)
        super().stopTest(test)

    def _check_recorders(self):
        # The recorder must never drop an event silently: everything the
        # test's hueys signalled reaches their event stores.
        problems = []
        for recorder in ATTACHED:
            if not recorder.flush(timeout=10.0):
                problems.append("recorder for %s: flush timed out"
                                % recorder.queue_name)
            elif recorder.stats().get("dropped"):
                problems.append("recorder for %s dropped %s event(s)" % (
                    recorder.queue_name, recorder.stats()["dropped"]))
        del ATTACHED[:]
        return "; ".join(problems)

    def _close_storages(self):
        # Each stand-in instance holds PostgreSQL connections; hundreds of
        # tests would exhaust the server's connection slots.
        FLUSHED.clear()
        if not OPEN_STORAGES:
            return
        for storage in OPEN_STORAGES:
            try:
                storage.close()
            except Exception:
                pass
        del OPEN_STORAGES[:]
        gc.collect()

    def _set(self, test, outcome, err):
        if self._outcome is None:
            self._outcome = (outcome, self._exc_info_to_string(err, test)
                             if isinstance(err, tuple) else str(err))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "fail", err)

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "error", err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "pass", "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "fail", "unexpected success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._set(test, "fail" if failed else "error", err)


def main(argv):
    variant, tests_dir, report, *selected = argv
    substitutions = VARIANTS[variant]()
    suite = load_tests(tests_dir, substitutions, MODULES.get(variant),
                       selected)
    signal.signal(signal.SIGALRM, _alarm)
    with open(report, "w") as out:
        try:
            suite.run(LineResult(out))
        except BaseException:
            out.write(json.dumps({"id": "(runner)", "outcome": "error",
                                  "detail": traceback.format_exc()}) + "\n")
            raise
    # Consumer threads and writer threads a failed test left running must
    # not keep this process alive: the report is complete.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
