"""The ``hueyscope`` command: a click group wiring the commands.

Each command lives beside the code it drives and is imported only when it
runs, so ``hueyscope produce`` does not pay for importing Datasette.
"""
import importlib

import click

COMMANDS = {
    "demo": "hueyscope.demo:demo",
    "produce": "hueyscope.producer.command:produce",
    "consume": "hueyscope.consumer.command:consume",
    "status": "hueyscope.commands.status:status",
    "recover": "hueyscope.commands.recover:recover_command",
    "failed": "hueyscope.commands.failed:failed_command",
    "retry": "hueyscope.commands.failed:retry_command",
    "discard": "hueyscope.commands.failed:discard_command",
    "revoke": "hueyscope.commands.revoke:revoke_command",
    "restore": "hueyscope.commands.revoke:restore_command",
    "cancel": "hueyscope.commands.cancel:cancel_command",
    "pause": "hueyscope.commands.pause:pause_command",
    "resume": "hueyscope.commands.pause:resume_command",
    "report": "hueyscope.reports.command:report",
    "browse": "hueyscope.browse.command:browse",
    "prune": "hueyscope.events.retention:prune",
    "check": "hueyscope.alerts.command:check",
    "metrics": "hueyscope.metrics.command:metrics",
    "bench": "hueyscope.bench:bench",
}


class LazyGroup(click.Group):
    """Imports a command when it runs, and reports bad input on one line.

    A mistyped option or command is bad input like any other: one
    ``Error: ...`` line with where to look, exit code 2, rather than the
    usage text around it. So is a ValueError out of a command: commands do
    not convert them one by one.
    """

    def invoke(self, ctx):
        from hueyscope.options import BadInput

        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            message = " ".join(exc.format_message().split()).rstrip(".")
            raise BadInput("%s (see %s --help)" % (message, where)) from None
        except ValueError as exc:
            # The one place a ValueError becomes bad input. hueyscope's
            # checks (settings, durations, rules, queue and store files,
            # an app that does not import) raise ValueError with a message
            # made for the user; it is printed as one Error line, exit 2.
            raise BadInput(str(exc)) from None

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="hueyscope")
def cli():
    """Background tasks on Huey with SQLite, and every task event on record.

    Producers enqueue into one SQLite queue; consumers run the tasks; every
    lifecycle signal lands in the event store, which "hueyscope report"
    turns into a static site and "hueyscope browse" opens in Datasette.
    Run "hueyscope demo" to see it all at work.
    """
