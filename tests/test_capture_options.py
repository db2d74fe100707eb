"""What the recorder keeps of task arguments, as the commands configure it.

``--no-args``, ``--max-arg-chars`` and ``--redact``, and their HUEYSCOPE_*
variables. The --no-args flag on consume and produce together is in
test_recorder.py (test_no_args_flag_turns_capture_off), and truncation and
redaction through attach() options are there too; here the variables, flags
winning over them, bad values and the demo's wiring.
"""
import json

import pytest

from conftest import query


def args_by_run(events):
    """{producer run id: (events, events with args or kwargs)}, oldest first."""
    rows = query(events, "select r.id, count(e.id), count(e.args) + count(e.kwargs) "
                 "from runs r join events e on e.run_id = r.id "
                 "where r.role = 'producer' group by r.id order by r.started")
    return [(n, with_args) for _, n, with_args in rows]


@pytest.mark.timeout(60)
def test_env_var_and_flag_turn_capture_off(cli):
    # Default: arguments are recorded (so the checks below can fail).
    assert cli.run("produce", "mixed").returncode == 0
    # The environment variable alone turns capture off...
    result = cli.run("produce", "mixed", HUEYSCOPE_NO_ARGS="1")
    assert result.returncode == 0, result.stderr
    # ...and the flag does even when the variable says otherwise.
    result = cli.run("produce", "mixed", "--no-args", HUEYSCOPE_NO_ARGS="0")
    assert result.returncode == 0, result.stderr
    # An explicit "0" leaves capture on.
    result = cli.run("produce", "mixed", HUEYSCOPE_NO_ARGS="0")
    assert result.returncode == 0, result.stderr

    runs = args_by_run(cli.events)
    assert len(runs) == 4
    assert all(n == 7 for n, _ in runs), runs
    assert [with_args > 0 for _, with_args in runs] == [True, False, False, True]
    assert query(cli.events, "select count(*) from events where signal = "
                 "'enqueued' and args is null and kwargs is null") == [(14,)]


@pytest.mark.parametrize("command", [["produce"], ["consume"], ["demo"]])
def test_commands_offer_the_flags(cli, command):
    result = cli.run(*command, "--help")
    assert result.returncode == 0, result.stderr
    for text in ("--no-args", "HUEYSCOPE_NO_ARGS", "--max-arg-chars",
                 "HUEYSCOPE_MAX_ARG_CHARS", "--redact", "HUEYSCOPE_REDACT"):
        assert text in result.stdout, text


def pi_kwargs(events):
    """The kwargs of the mixed scenario's cpu_pi_estimate enqueues, by run."""
    return [json.loads(kwargs) for kwargs, in query(
        events, "select e.kwargs from events e join runs r on r.id = e.run_id "
        "where e.signal = 'enqueued' and e.task = 'cpu_pi_estimate' "
        "order by r.started")]


@pytest.mark.timeout(60)
def test_redaction_list_from_flag_and_variable(cli):
    assert cli.run("produce", "mixed").returncode == 0
    result = cli.run("produce", "mixed", "--redact", "Seed, password")
    assert result.returncode == 0, result.stderr
    # The variable reaches the recorder too, and '' adds no key even
    # though the variable asks for one.
    result = cli.run("produce", "mixed", HUEYSCOPE_REDACT="samples")
    assert result.returncode == 0, result.stderr
    result = cli.run("produce", "mixed", "--redact", "",
                     HUEYSCOPE_REDACT="samples")
    assert result.returncode == 0, result.stderr
    assert pi_kwargs(cli.events) == [
        {"samples": 50000, "seed": 0},
        {"samples": 50000, "seed": "***"},
        {"samples": "***", "seed": 0},
        {"samples": 50000, "seed": 0},
    ]


@pytest.mark.timeout(60)
def test_max_arg_chars_keeps_every_value_valid_json(cli):
    result = cli.run("produce", "mixed", "--max-arg-chars", "12")
    assert result.returncode == 0, result.stderr
    result = cli.run("produce", "mixed", HUEYSCOPE_MAX_ARG_CHARS="0")
    assert result.returncode == 0, result.stderr
    cut, whole = pi_kwargs(cli.events)
    # 29 characters of JSON, cut to what takes 12 once its quotes are
    # escaped: a string that says so.
    assert cut == '{"samples"...[truncated 19 chars]'
    assert whole == {"samples": 50000, "seed": 0}
    # Short values are untouched, and SQLite's JSON functions read every row.
    assert query(cli.events, "select distinct args from events "
                 "where task = 'slow_io'") == [("[0.3]",)]
    assert query(cli.events, "select count(*) from events where args is not "
                 "null and not (json_valid(args) and json_valid(kwargs))") == [(0,)]


@pytest.mark.parametrize("args, env, message", [
    (["--max-arg-chars", "-1"], {}, "Invalid value for '--max-arg-chars'"),
    (["--max-arg-chars", "lots"], {}, "Invalid value for '--max-arg-chars'"),
    # The variable is read like the option, and named in the message.
    ([], {"HUEYSCOPE_MAX_ARG_CHARS": "lots"},
     "Invalid value for '--max-arg-chars' (env var: 'HUEYSCOPE_MAX_ARG_CHARS'): "
     "'lots' is not a whole number"),
    ([], {"HUEYSCOPE_MAX_ARG_CHARS": "-5"},
     "Invalid value for '--max-arg-chars' (env var: 'HUEYSCOPE_MAX_ARG_CHARS'): "
     "-5 is not in the range x>=0"),
])
@pytest.mark.parametrize("command", [["produce", "mixed"], ["consume"], ["demo"]])
def test_bad_capture_values_are_one_line(cli, command, args, env, message):
    result = cli.run(*command, *args, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: " + message), lines
    assert not cli.events.exists()
    assert not (cli.folder / "demo-run").exists()


def test_demo_passes_the_flags_to_its_settings(tmp_path, monkeypatch):
    from hueyscope.demo import Demo

    monkeypatch.delenv("HUEYSCOPE_NO_ARGS", raising=False)
    monkeypatch.delenv("HUEYSCOPE_MAX_ARG_CHARS", raising=False)
    monkeypatch.delenv("HUEYSCOPE_REDACT", raising=False)
    assert Demo(tmp_path).settings.no_args is False
    assert Demo(tmp_path, no_args=True).settings.no_args is True
    monkeypatch.setenv("HUEYSCOPE_NO_ARGS", "1")
    assert Demo(tmp_path).settings.no_args is True
    assert Demo(tmp_path).settings.max_arg_chars == 2000
    assert Demo(tmp_path, max_arg_chars=10).settings.max_arg_chars == 10
    defaults = Demo(tmp_path).settings.redact_keys
    assert {"password", "token", "secret", "apikey", "authorization",
            "cookie"} <= set(defaults)
    # Names are added to the defaults, normalised; -name drops one.
    assert Demo(tmp_path, redact=" Seed,,PIN, -Session ").settings.redact_keys \
        == tuple(k for k in defaults if k != "session") + ("seed", "pin")


def test_demo_runs_the_demo_catalogue_on_its_own_files(tmp_path, monkeypatch):
    from hueyscope.demo import Demo

    monkeypatch.setenv("HUEYSCOPE_APP", "myapp.tasks:huey")
    monkeypatch.setenv("HUEYSCOPE_QUEUE", "/elsewhere/queue.db")
    monkeypatch.setenv("HUEYSCOPE_DELIVERY", "at-most-once")
    settings = Demo(tmp_path).settings
    assert settings.app == "hueyscope.demo_tasks:huey"
    assert settings.queue == str(tmp_path / "queue.db")
    assert settings.delivery == "at-least-once"
