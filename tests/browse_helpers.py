"""A small event store with known contents, for exact answers to each query.

Written through the real schema (open_event_store + migrations), with rows
shaped the way the recorder writes them. The store of a real consumer run
(the ``recorded_store`` fixture) is used as well; this one pins down the
numbers a real run cannot make deterministic (percentiles, lost tasks).
"""
import asyncio
import json

from hueyscope.events.schema import open_event_store

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def build_known_store(path, now):
    """Write the known store at ``path``; ``now`` is the current unix time.

    Contents:
    - runs: c-live (consumer, heartbeat at now), c-dead (consumer, last
      heartbeat an hour ago, never stopped), c-stopped (stopped gracefully),
      p-1 (producer).
    - quick_add: 10 tasks complete, durations 0.1 .. 1.0, waits 1 .. 10.
    - flaky: f-1 failed after 3 attempts (ValueError, fingerprint fp-value);
      f-2 retried once then complete; f-3 failed once (KeyError, fp-key).
    - locked_sync_job: l-1 complete, l-2 and l-3 locked (twice for l-2).
    - slow_io: s-live executing on c-live, s-dead executing on c-dead,
      s-stopped executing on c-stopped.
    - delayed: d-revoked revoked, d-expired expired.
    """
    db = open_event_store(str(path))
    db["runs"].insert_all([
        dict(id="c-live", role="consumer", host="h1", pid=11, started=T0,
             heartbeat=now, workers=2, worker_type="thread", queue="q"),
        dict(id="c-dead", role="consumer", host="h1", pid=12, started=T0 + 1,
             heartbeat=now - 3600, workers=2, worker_type="thread", queue="q"),
        dict(id="c-stopped", role="consumer", host="h2", pid=13, started=T0 + 2,
             stopped=T0 + 500, stop_reason="graceful", heartbeat=T0 + 500,
             workers=1, worker_type="process", queue="q"),
        dict(id="p-1", role="producer", host="h1", pid=14, started=T0 + 3,
             stopped=T0 + 4, stop_reason="graceful", queue="q"),
    ])
    events, tasks = [], []

    def event(ts, task_id, task, signal, **kw):
        events.append(dict(ts=ts, run_id=kw.pop("run_id", "c-live"), queue="q",
                           task_id=task_id, task=task, signal=signal,
                           host="h1", pid=11, worker="Worker-1", **kw))

    for i in range(10):
        tid, start = "qa-%d" % i, T0 + 60 * i
        wait, duration = float(i + 1), (i + 1) / 10
        event(start - wait, tid, "quick_add", "enqueued", run_id="p-1",
              args=json.dumps([i, i]), kwargs="{}")
        event(start, tid, "quick_add", "executing", attempt=1, wait=wait)
        event(start + duration, tid, "quick_add", "complete", attempt=1,
              duration=duration)
        tasks.append(dict(task_id=tid, task="quick_add", queue="q",
                          status="complete", enqueued=start - wait,
                          ready=start - wait, started=start,
                          finished=start + duration, attempts=1, wait=wait,
                          duration=duration, run_id="c-live",
                          updated=start + duration))

    def failing(tid, attempts, final, error_type, fp, start):
        event(start - 1, tid, "flaky", "enqueued", run_id="p-1")
        ts = start
        for attempt in range(1, attempts + 1):
            event(ts, tid, "flaky", "executing", attempt=attempt, wait=1.0)
            last = attempt == attempts
            if last and final == "complete":
                event(ts + 0.5, tid, "flaky", "complete", attempt=attempt,
                      duration=0.5)
            else:
                event(ts + 0.5, tid, "flaky", "error", attempt=attempt,
                      duration=0.5, error_type=error_type,
                      error="boom %d" % attempt, fingerprint=fp,
                      traceback="Traceback ...")
                if not last:
                    event(ts + 0.5, tid, "flaky", "retrying", attempt=attempt,
                          retries_left=attempts - attempt)
            ts += 10
        tasks.append(dict(task_id=tid, task="flaky", queue="q", status=final,
                          enqueued=start - 1, ready=start - 1,
                          started=ts - 10, finished=ts - 9.5,
                          attempts=attempts, wait=1.0, duration=0.5,
                          error_type=None if final == "complete" else error_type,
                          error=None if final == "complete" else "boom %d" % attempts,
                          fingerprint=None if final == "complete" else fp,
                          run_id="c-live", updated=ts - 9.5))

    failing("f-1", 3, "failed", "ValueError", "fp-value", T0 + 1000)
    failing("f-2", 2, "complete", "ValueError", "fp-value", T0 + 1100)
    failing("f-3", 1, "failed", "KeyError", "fp-key", T0 + 1200)

    for tid, locks in (("l-1", 0), ("l-2", 2), ("l-3", 1)):
        event(T0 + 1300, tid, "locked_sync_job", "enqueued", run_id="p-1")
        event(T0 + 1301, tid, "locked_sync_job", "executing", attempt=1, wait=1.0)
        if locks:
            for n in range(locks):
                event(T0 + 1301 + n, tid, "locked_sync_job", "locked", attempt=1)
        else:
            event(T0 + 1302, tid, "locked_sync_job", "complete", attempt=1,
                  duration=1.0)
        tasks.append(dict(task_id=tid, task="locked_sync_job", queue="q",
                          status="locked" if locks else "complete",
                          enqueued=T0 + 1300, started=T0 + 1301,
                          finished=T0 + 1302, attempts=1, run_id="c-live",
                          updated=T0 + 1302))

    for tid, run in (("s-live", "c-live"), ("s-dead", "c-dead"),
                     ("s-stopped", "c-stopped")):
        event(T0 + 400, tid, "slow_io", "enqueued", run_id="p-1")
        event(T0 + 401, tid, "slow_io", "executing", attempt=1, wait=1.0,
              run_id=run)
        tasks.append(dict(task_id=tid, task="slow_io", queue="q",
                          status="executing", enqueued=T0 + 400,
                          started=T0 + 401, attempts=1, run_id=run,
                          updated=T0 + 401))

    for tid, signal in (("d-revoked", "revoked"), ("d-expired", "expired")):
        event(T0 + 1500, tid, "delayed", "scheduled", run_id="p-1",
              eta=T0 + 1600)
        event(T0 + 1600, tid, "delayed", signal)
        tasks.append(dict(task_id=tid, task="delayed", queue="q",
                          status=signal, enqueued=T0 + 1500, eta=T0 + 1600,
                          finished=T0 + 1600, attempts=0, updated=T0 + 1600))

    db["events"].insert_all(events)
    db["tasks"].insert_all(tasks)
    db["queue_samples"].insert_all(
        dict(ts=T0 + 60 * i, queue="q", pending=10 - i, scheduled=1,
             in_flight=2, run_id="c-live") for i in range(10))
    # Roll-ups as the writer keeps them, straight from the events.
    db.execute("""
        insert into rollup_hourly (hour, task, signal, count, duration_sum,
                                   duration_max, wait_sum)
        select cast(ts / 3600 as integer) * 3600.0, task, signal, count(*),
               sum(duration), max(duration), sum(wait)
        from events group by 1, 2, 3""")
    db.conn.commit()
    db.close()
    return path


def get(ds, path):
    """GET ``path`` through Datasette's own client (async) from sync code."""
    return asyncio.run(ds.client.get(path))


def rows(ds, database, query, **params):
    """Rows of a canned query as dicts, through Datasette's JSON API."""
    from urllib.parse import urlencode

    qs = urlencode(dict(params, _shape="objects"))
    response = get(ds, "/%s/%s.json?%s" % (database, query, qs))
    assert response.status_code == 200, response.text
    return response.json()["rows"]
