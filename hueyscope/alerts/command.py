"""``hueyscope check``: evaluate the alert rules once; the exit code says how it went.

0: every rule is quiet. 1: at least one fired, one line each on stdout.
2: bad input (a bad rules file, a missing store, --notify without apprise),
one ``Error: ...`` line on stderr. Made for cron, systemd's OnFailure= and CI.
"""
import sqlite3

import click

from hueyscope.alerts.checks import Sources, evaluate, firing
from hueyscope.alerts.rules import load_rules
from hueyscope.options import settings_options


def rules_from(path):
    """The enabled rules of ``path`` ("": the defaults); ValueError if it is bad."""
    return load_rules(path or None)


def app_loader(settings):
    """A callable loading the settings' Huey once, on first use.

    Only the periodic check needs the app (for its crontabs), and only when
    a consumer declared periodic tasks: a store without any is checked
    without importing anything.
    """
    return lazy_app(settings.app, before=settings.export_env)


def lazy_app(spec, before=None):
    """A callable importing the Huey ``spec`` (``module:huey``) names, once,
    on its first call; ``before`` (if given) is called first."""
    loaded = []

    def load():
        if not loaded:
            from hueyscope.apps import load_app

            if before is not None:
                before()
            loaded.append(load_app(spec))
        return loaded[0]

    return load


@click.command()
@settings_options(only=("queue", "events", "app", "rules"))
@click.option("--notify", "notify_urls", multiple=True, metavar="URL",
              help="Also send each firing alert to this apprise URL "
                   "(json://host/path, mailto://..., slack://...); repeat "
                   "for several. Needs pip install 'hueyscope[alerts]'.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also print what each quiet rule measured, on stderr.")
def check(settings, notify_urls, verbose):
    """Check the alert rules: exit 1 if one fires, 0 if none.

    \b
    Examples:
        hueyscope check
        hueyscope check --rules /etc/hueyscope/rules.toml
        hueyscope check --notify json://alerts.internal/hook

    Rules (see the docs' Alerts page): oldest_pending, failure_rate, lost_task,
    no_consumer, missed_tick, disk_free, store_size. Each firing rule
    prints one line on stdout, naming what fired, the value and the
    threshold; exit code 1. Nothing is printed when every rule is quiet
    (exit 0). Bad input exits 2.
    """
    from hueyscope.events.schema import check_event_store

    rules = rules_from(settings.rules)
    targets = None
    if notify_urls:
        from hueyscope.alerts.notify import notifier

        targets = notifier(notify_urls)
    check_event_store(settings.events, must_exist=True)
    queue = settings.queue_path if settings.queue_scheme == "sqlite" else None
    try:
        findings = evaluate(rules, Sources(settings.events, queue=queue,
                                           app=app_loader(settings)))
    except sqlite3.Error as exc:  # a ValueError is bad input already
        raise ValueError("cannot read event store %s: %s" % (
            settings.events, exc))
    alerts = firing(findings)
    for finding in findings:
        if finding.fired:
            click.echo(finding.message)
        elif verbose:
            click.echo("ok %s" % finding.message, err=True)
    if targets is not None and alerts:
        from hueyscope.alerts.notify import send

        send(targets, alerts)
    raise SystemExit(1 if alerts else 0)
