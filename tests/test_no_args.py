"""``--no-args`` and HUEYSCOPE_NO_ARGS: no task arguments in the event store.

The flag on consume and produce together is in test_recorder.py
(test_no_args_flag_turns_capture_off); here the environment variable, the
flag winning over it, and the demo's wiring.
"""
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
def test_commands_offer_the_flag(cli, command):
    result = cli.run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "--no-args" in result.stdout and "HUEYSCOPE_NO_ARGS" in result.stdout


def test_demo_passes_the_flag_to_its_settings(tmp_path, monkeypatch):
    from hueyscope.demo import Demo

    monkeypatch.delenv("HUEYSCOPE_NO_ARGS", raising=False)
    assert Demo(tmp_path).settings.no_args is False
    assert Demo(tmp_path, no_args=True).settings.no_args is True
    monkeypatch.setenv("HUEYSCOPE_NO_ARGS", "1")
    assert Demo(tmp_path).settings.no_args is True
