"""File names SQLite URIs would misread: ``#``, ``?``, ``%``, a space, non-ASCII.

Readers open stores and queues through ``file:`` URIs, where ``#`` and ``?``
end the name and ``%41`` means ``A``. Each name here must reach SQLite as it
is: report, status and browse (Datasette through its own client) read the
file named, and create nothing beside it -- not a truncated ``a`` for
``a#b.db``.
"""
import asyncio
import json
import sqlite3

import pytest

from conftest import run_cli, cli_env
from hueyscope.browse.app import make_datasette, store_names

NAMES = ["a#b.db", "a?b=c.db", "a%41b%.db", "with space.db", "événements-é.db"]


def _copy(src, dest):
    """A consistent copy of a SQLite file (WAL included) at ``dest``."""
    source = sqlite3.connect(str(src))
    target = sqlite3.connect(str(dest))
    source.backup(target)
    source.close()
    target.close()


def _folder(path):
    return sorted(p.name for p in path.iterdir())


def _allowed(name, extra=()):
    return {name, name + "-wal", name + "-shm", *extra}


@pytest.fixture
def odd(recorded_store, tmp_path, request):
    name = request.param
    folder = tmp_path / "dir"
    folder.mkdir()
    _copy(recorded_store, folder / name)
    _copy(recorded_store.parent / "queue.db", folder / ("queue-" + name))
    return folder, name


@pytest.mark.timeout(120)
@pytest.mark.parametrize("odd", NAMES, indirect=True)
def test_report_and_status_read_the_file_named(odd, recorded_expected, tmp_path):
    folder, name = odd
    env = cli_env(tmp_path)
    result = run_cli(["report", folder / name, "--out", folder / "site"],
                     tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (folder / "site" / "index.html").exists()
    queue = "queue-" + name
    result = run_cli(["status", "--json", "--queue", folder / queue], tmp_path,
                     env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)
    assert set(_folder(folder)) <= _allowed(name, ["site"]) | _allowed(queue)
    assert _folder(tmp_path) == ["dir"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("odd", NAMES, indirect=True)
def test_browse_serves_the_file_named(odd, recorded_expected):
    folder, name = odd
    ds = make_datasette([folder / name])
    store, = store_names(ds)

    async def ask():
        tasks = await ds.client.get(
            ds.urls.table(store, "tasks", format="json") + "?_size=1")
        count = await ds.client.get(
            ds.urls.database(store, format="json")
            + "?sql=select+count(*)+as+n+from+tasks&_shape=array")
        return tasks, count

    tasks, count = asyncio.run(ask())
    assert tasks.status_code == 200, tasks.text[:300]
    assert count.status_code == 200, count.text[:300]
    assert count.json() == [{"n": recorded_expected["tasks"]}]
    for db in ds.databases.values():
        db.close()
    assert set(_folder(folder)) <= _allowed(name) | _allowed("queue-" + name)
