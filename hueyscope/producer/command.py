"""``hueyscope produce SCENARIO``: enqueue demo work from a separate process.

The producer only writes to the queue; a consumer (``hueyscope consume``),
started before or after, runs the tasks. Its 'enqueued' signals are recorded
in the event store under a run of role "producer".
"""
import time

import click

import hueyscope
from hueyscope.apps import open_app
from hueyscope.options import (Choice, FloatRange, IntRange, capture_options,
                               settings_options)
from hueyscope.producer.scenarios import DEFAULT_COUNT, SCENARIOS, wait_for


@click.command()
@click.argument("scenario", type=Choice(sorted(SCENARIOS)), metavar="SCENARIO")
@click.option("-n", "--count", type=IntRange(min=0), default=None,
              help="load: number of tasks (default 1000); other scenarios: "
                   "rounds (default 1).")
@click.option("--wait", is_flag=True,
              help="Block until every result is in, and print them.")
@click.option("--timeout", type=FloatRange(min=0), default=60.0, show_default=True,
              help="With --wait: give up after this many seconds in total.")
# Scenarios enqueue the demo catalogue: there is no --app to choose.
@settings_options(only=("queue", "events", "durability", "delivery"))
@capture_options
def produce(settings, scenario, count, wait, timeout):
    """Enqueue a SCENARIO of demo tasks into the queue.

    \b
    Scenarios:
        mixed     priorities 10 to 100 in one queue
        flaky     a call retried twice then succeeding, one failing for good
        locks     three jobs behind one lock: they run one at a time
        pipeline  fetch(7) -> transform(x3) -> store: 7 -> 21 -> stored
        schedule  a delayed task, a delayed task revoked, one that expires
        load      --count N small tasks, with a progress bar

    With --wait it blocks (up to --timeout seconds) and prints each result;
    it exits 1 if some did not arrive in time.
    """
    huey = open_app(settings)
    recorder = hueyscope.attach(huey, events=settings.events)
    from hueyscope import demo_tasks

    if count is None:
        count = DEFAULT_COUNT.get(scenario, 1)
    run = SCENARIOS[scenario]
    started = time.monotonic()
    if scenario == "load":
        with click.progressbar(length=count, label="enqueueing",
                               show_pos=True) as bar:
            submitted = run(demo_tasks, count, progress=bar.update)
        click.echo("enqueued %d quick_add tasks in %.2f s" % (
            count, time.monotonic() - started))
    else:
        submitted = run(demo_tasks, count)
        for item in submitted:
            click.echo("enqueued  %-48s %s%s%s" % (
                item.label, _short(item.task_ids[-1]),
                "  priority %d" % item.priority if item.priority is not None else "",
                "  eta %s" % item.eta if item.eta else ""))
    recorder.flush()
    if not wait:
        return
    missing = _wait_all(huey, submitted, time.monotonic() + timeout,
                        quiet=scenario == "load")
    recorder.flush()
    if missing:
        raise click.exceptions.Exit(1)


def _short(task_id):
    return task_id[:8]


def _wait_all(huey, submitted, deadline, quiet=False):
    """Print every result as it is read; return how many did not arrive."""
    missing = done = 0
    for item in submitted:
        if item.expect != "result":
            if not quiet:
                click.echo("skipped   %-48s %s (%s: never runs)" % (
                    item.label, _short(item.task_ids[-1]), item.expect))
            continue
        values = []
        for task_id in item.task_ids:
            outcome = wait_for(huey, task_id, deadline)
            values.append(outcome)
            if outcome.status != "complete":
                break
        last = values[-1]
        if last.status == "timeout":
            missing += 1
            click.echo("timeout   %-48s %s (no result in time)" % (
                item.label, _short(item.task_ids[-1])))
            continue
        done += 1
        if quiet:
            continue
        if last.status == "failed":
            shown = "failed for good: %s" % last.error
        else:
            shown = " -> ".join(repr(v.value) for v in values)
        click.echo("result    %-48s %s %s" % (
            item.label, _short(item.task_ids[-1]), shown))
    if quiet:
        click.echo("%d results read, %d missing" % (done, missing))
    return missing
