"""huey's own test suite, run against hueyscope's classes (docs/huey-suite.md).

Each variant runs huey's unittest suite in a subprocess (``bootstrap.py``)
with some of huey's classes replaced by ours; the variants run at the same
time (they mostly wait on SQLite and PostgreSQL commits, not on the CPU).
huey's tests come from huey's source distribution, which the test command
downloads into ``.cache/huey-sdist/`` before pytest starts (see README).

``differences.toml`` lists, per variant, each of huey's tests that fails
with the reason. A listed test that fails is expected; an unlisted failure
fails here, and so does a listed test that passes: the list only shrinks.
"""
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import require_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SDIST_DIR = ROOT / ".cache" / "huey-sdist"
DIFFERENCES = HERE / "differences.toml"
BOOTSTRAP = HERE / "bootstrap.py"
ARTIFACTS = ROOT / "test-artifacts" / "huey-suite"

VARIANTS = ("leased", "at-most-once", "attached", "consumer", "postgres",
            "postgres-memory")
POSTGRES_VARIANTS = ("postgres", "postgres-memory")
POSTGRES = os.environ.get("HUEYSCOPE_TEST_POSTGRES",
                          "postgresql://127.0.0.1:5432/test")
# Seconds a whole variant may take (its slowest one takes about a minute
# on a busy 2-core machine).
VARIANT_TIMEOUT = 240
FAILED = ("fail", "error")
FLAKY = "flaky:"


def in_ci():
    return os.environ.get("HUEYSCOPE_REQUIRE_SERVERS") == "1" or \
        os.environ.get("CI") == "true"


def huey_version():
    return importlib.metadata.version("huey")


def sdist_path():
    return SDIST_DIR / ("huey-%s.tar.gz" % huey_version())


def download_command():
    return ("pip download --no-binary :all: --no-deps huey==%s -d %s"
            % (huey_version(), SDIST_DIR.relative_to(ROOT)))


def load_differences(path=DIFFERENCES):
    """{variant: {test id: reason}} from the differences file."""
    tomllib = pytest.importorskip(
        "tomllib", reason="reading differences.toml needs Python 3.11")
    with open(path, "rb") as f:
        document = tomllib.load(f)
    unknown = sorted(set(document) - set(VARIANTS))
    assert not unknown, "%s: unknown variant(s) %s" % (path.name, unknown)
    return {variant: dict(document.get(variant, {})) for variant in VARIANTS}


def judge(results, expected):
    """What is wrong with a variant's results, as lines (empty: all good).

    ``results``: {test id: (outcome, detail)}; ``expected``: {test id:
    reason} from the differences file. A reason starting with ``flaky:``
    says the test depends on timing: it may pass or fail.
    """
    problems = []
    for test_id, (outcome, detail) in sorted(results.items()):
        if outcome in FAILED and test_id not in expected:
            problems.append("FAILS (not in differences.toml): %s\n%s" % (
                test_id, _indent(_last_lines(detail))))
        elif outcome == "pass" and test_id in expected and \
                not expected[test_id].startswith(FLAKY):
            problems.append(
                "PASSES now: %s -- remove it from differences.toml "
                "(it was listed: %s)" % (test_id, expected[test_id]))
    for test_id in sorted(set(expected) - set(results)):
        problems.append("NOT IN huey's suite: %s -- remove it from "
                        "differences.toml" % test_id)
    return problems


def read_report(path):
    """{test id: (outcome, detail)} and the test running when it stopped."""
    results, running = {}, None
    if not path.exists():
        return results, running
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["outcome"] == "start":
            running = row["id"]
        else:
            results[row["id"]] = (row["outcome"], row["detail"])
            running = None
    return results, running


def _last_lines(text, n=12):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return "\n".join(lines[-n:])


def _indent(text):
    return "\n".join("    " + line for line in text.splitlines())


# -- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="session")
def huey_tests(tmp_path_factory):
    """huey/tests of the installed huey's source distribution, unpacked."""
    sdist = sdist_path()
    if not sdist.exists():
        message = ("huey's source distribution is missing (%s): run `%s`"
                   % (sdist.relative_to(ROOT), download_command()))
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("huey-sdist")
    prefix = "huey-%s/huey/tests/" % huey_version()
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(prefix) and m.isfile()]
        assert members, "%s holds no huey/tests" % sdist
        options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(folder, members=members, **options)
    return folder / prefix


class PostgresSchemas:
    """Fresh schemas in the test database, one per PostgreSQL variant."""

    def __init__(self):
        self.admin = self.unreachable = None
        self.names = []

    def dsn(self, variant):
        """A DSN on a new schema, or None (then ``unreachable`` says why)."""
        if self.admin is None and self.unreachable is None:
            try:
                import psycopg

                self.admin = psycopg.connect(POSTGRES, autocommit=True,
                                             connect_timeout=5)
            except Exception as exc:  # no driver, no server
                self.unreachable = exc
        if self.admin is None:
            return None
        name = "hs_huey_%s_%s" % (variant.replace("-", "_"), uuid.uuid4().hex[:8])
        self.admin.execute("create schema %s" % name)
        self.names.append(name)
        return "%s?options=-csearch_path%%3D%s" % (POSTGRES, name)

    def drop(self):
        if self.admin is None:
            return
        for name in self.names:
            self.admin.execute("drop schema if exists %s cascade" % name)
        self.admin.close()


class Run:
    """One variant's subprocess, its report and its output files."""

    def __init__(self, variant, tests_dir, folder, env):
        self.variant = variant
        self.folder = folder
        self.report = folder / "report.jsonl"
        self.output = folder / "output.txt"
        work = folder / "work"
        work.mkdir()
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(BOOTSTRAP), variant, str(tests_dir),
                 str(self.report)],
                cwd=str(work), env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.started = time.monotonic()

    def wait(self):
        try:
            self.proc.wait(timeout=max(
                VARIANT_TIMEOUT - (time.monotonic() - self.started), 1))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
            return "timed out after %d s" % VARIANT_TIMEOUT
        return None

    def seconds(self):
        """Time spent in huey's tests, from the report."""
        if not self.report.exists():
            return 0.0
        return sum(json.loads(line).get("seconds", 0)
                   for line in self.report.read_text().splitlines())

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


@pytest.fixture(scope="session")
def suite_runs(request, huey_tests, tmp_path_factory):
    """Start every selected variant at once; {variant: Run}.

    They spend their time waiting on commits, so together they take about
    as long as the slowest one alone.
    """
    selected = {item.callspec.params["variant"] for item in request.session.items
                if item.originalname == "test_huey_suite"}
    runs, schemas = {}, PostgresSchemas()
    for variant in VARIANTS:
        if variant not in selected:
            continue
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HUEYSCOPE_", "HUEY_"))}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if variant in POSTGRES_VARIANTS:
            env["HUEY_PG_DSN"] = schemas.dsn(variant)
            if env["HUEY_PG_DSN"] is None:
                runs[variant] = schemas.unreachable
                continue
        folder = tmp_path_factory.mktemp("huey-suite-" + variant)
        runs[variant] = Run(variant, huey_tests, folder, env)
    yield runs
    for run in runs.values():
        if isinstance(run, Run):
            run.stop()
    schemas.drop()


# -- the tests ---------------------------------------------------------------

@pytest.mark.timeout(VARIANT_TIMEOUT + 30)
@pytest.mark.parametrize("variant", VARIANTS)
def test_huey_suite(variant, suite_runs):
    """huey's suite on one variant fails exactly as differences.toml says."""
    expected = load_differences()[variant]
    run = suite_runs[variant]
    if not isinstance(run, Run):
        require_server("PostgreSQL", POSTGRES, run)
    timed_out = run.wait()
    results, running = read_report(run.report)
    _keep(run)
    counts = {}
    for outcome, _ in results.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    print("huey %s, variant %s: %s; %.0f s in huey's tests" % (
        huey_version(), variant, counts, run.seconds()))
    output = _last_lines(run.output.read_text(errors="replace"), 30)
    assert timed_out is None, "%s (in %s)\n%s" % (timed_out, running, output)
    assert run.proc.returncode == 0 and running is None, \
        "huey's suite stopped in %s (exit code %s)\n%s" % (
            running, run.proc.returncode, output)
    assert "(runner)" not in results, results["(runner)"][1]
    assert counts.get("pass"), "no test of huey's passed:\n%s" % output
    problems = judge(results, expected)
    assert not problems, "variant %s:\n%s" % (variant, "\n".join(problems))


def _keep(run):
    # The per-test report, kept where CI collects artifacts.
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / ("%s.jsonl" % run.variant)).write_bytes(
            run.report.read_bytes())
    except OSError:
        pass


def test_judge_flags_new_failures_and_stale_entries():
    """The differences file works both ways: unlisted failures and listed passes."""
    results = {"a.T.one": ("fail", "AssertionError: 1 != 2"),
               "a.T.two": ("pass", ""),
               "a.T.three": ("error", "boom"),
               "a.T.four": ("skip", "no server"),
               "a.T.five": ("pass", "")}
    expected = {"a.T.three": "known", "a.T.two": "was broken",
                "a.T.four": "server only", "a.T.gone": "renamed",
                "a.T.five": "flaky: a race"}
    problems = judge(results, expected)
    assert [p.split(":")[0] for p in problems] == [
        "FAILS (not in differences.toml)", "PASSES now", "NOT IN huey's suite"]
    assert "a.T.one" in problems[0] and "1 != 2" in problems[0]
    assert "remove it from differences.toml" in problems[1]
    assert "a.T.gone" in problems[2]


def test_differences_file_reads():
    """Every entry names a variant and gives a one-line reason."""
    for variant, entries in load_differences().items():
        for test_id, reason in entries.items():
            assert test_id.count(".") == 2, (variant, test_id)
            assert isinstance(reason, str) and reason.strip(), (variant, test_id)
            assert "\n" not in reason, (variant, test_id)
