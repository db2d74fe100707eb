"""``hueyscope browse``: open event stores in Datasette.

The server runs in this process through Datasette's Python API and uvicorn,
the way ``datasette serve`` does, so the instance served is exactly the one
:func:`hueyscope.browse.app.make_datasette` builds and the tests check.
"""
import os
import signal
import socket
import threading
import time
import webbrowser

import click

from hueyscope.options import (BadInput, IntRange, allow_host_option,
                               app_option, events_option, token_env_option)
from hueyscope.settings import Settings


@click.command()
@click.argument("events_db", nargs=-1, type=click.Path(dir_okay=True))
@events_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. Anything but loopback exposes the "
                   "store (task arguments included) to the network.")
@click.option("-p", "--port", default=8001, show_default=True,
              type=IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@allow_host_option
@click.option("--password-env", metavar="VAR", default=None,
              help="Ask every request for the password held in environment "
                   "variable VAR (HTTP Basic, any user name).")
@token_env_option
@click.option("--open", "open_browser", is_flag=True,
              help="Open a web browser once the server is up.")
@click.option("--queue", "queue", default=None, metavar="QUEUE",
              help="Also serve the console of this queue (a SQLite file, "
                   "postgresql:// URL) at /-/hueyscope: the queue live, and "
                   "actions for operators (see --root).")
@app_option
@click.option("--root", is_flag=True,
              help="Print a one-time URL that logs in as root, who may act "
                   "in the console.")
def browse(events_db, events, host, port, allow_hosts, password_env,
           token_envs, open_browser, queue, app, root):
    """Browse event stores in Datasette, read-only.

    EVENTS_DB are one or more event stores (default: the configured one,
    --events or HUEYSCOPE_EVENTS). Each becomes a database named after its
    file; tables and columns are described, and the questions the report
    answers are there as canned queries. Ctrl-C or SIGTERM stops the server.

    Only requests for the host listened on (and localhost) are answered;
    --allow-host adds names. With --password-env VAR every request needs
    the password in $VAR:

    \b
        BROWSE_PASSWORD=... hueyscope browse --host 0.0.0.0 \\
            --password-env BROWSE_PASSWORD --allow-host tasks.example.org

    With --queue, the console's actions answer scripts that send an API
    token from --token-env VAR (Authorization: Bearer $VAR), as the
    actor api:VAR, who may act; a token also stands in for the password:

    \b
        CONSOLE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe())') \\
            hueyscope browse --queue queue.db --token-env CONSOLE_TOKEN
    """
    from hueyscope.browse.app import is_local, make_datasette, store_names
    from hueyscope.serving import HostNames, tokens_from_env

    if not events_db:
        events_db = (Settings.build(only=("events",), events=events).events,)
    # The same file given twice (a.db, ./a.db) is served once.
    paths, seen = [], set()
    for path in events_db:
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            paths.append(path)
    password = _password(password_env)
    tokens = tokens_from_env(token_envs)
    console = _console_config(queue, app, events, host,
                              root or password or tokens)
    ds = make_datasette(paths, hosts=HostNames(host, allow_hosts),
                        password=password, console=console, tokens=tokens)
    if console is not None:
        _open_console(ds)
    if not is_local(host) and not password:
        click.secho(
            "Warning: listening on %s: anyone who can reach this machine can "
            "read the event store, and it may hold task arguments. Ask for a "
            "password: --password-env VAR." % host,
            fg="yellow", err=True)
    sock = _listen(host, port)
    url = "http://%s:%d/" % (_url_host(host), sock.getsockname()[1])
    names = store_names(ds)
    for name in names:
        click.echo("%s: %s" % (name, ds.databases[name].path))
    click.echo("Serving at %s (Ctrl-C to stop)" % url)
    if console is not None:
        click.echo("Console: %s-/hueyscope" % url)
    if root:
        click.echo("Log in as root: %s-/auth-token?token=%s" % (url, ds._root_token))
    # One store: open its page, with the tables and canned queries.
    open_url = url + (names[0] if len(names) == 1 else "")
    _serve(ds, sock, open_url if open_browser else None)


def _console_config(queue, app, events, host, authenticated):
    """The console plugin's configuration, or None without --queue.

    Acting on the queue needs an authenticated operator: on an address
    other people can reach, refuse to serve actions with no authentication
    at all (``authenticated``: --root, --password-env or --token-env; or an
    installed authentication plugin).
    """
    from hueyscope.browse.app import is_local

    if not queue:
        return None
    if not is_local(host) and not authenticated and not _authentication_plugins():
        raise BadInput("refusing to serve the console's actions on %s with no "
                       "authentication: use --root, --password-env or "
                       "--token-env, install "
                       "an authentication plugin (e.g. datasette-auth-passwords), "
                       "or listen on 127.0.0.1" % host)
    config = {"queue": queue}
    if app:
        config["app"] = app
    if events:
        config["events"] = events
    return config


def _authentication_plugins():
    """Installed Datasette plugins that say who a request is from."""
    from datasette.plugins import pm

    ours = ("datasette.actor_auth_cookie", "datasette.default_permissions")
    return [impl.plugin_name for impl in
            pm.hook.actor_from_request.get_hookimpls()
            if impl.plugin_name not in ours]


def _open_console(ds):
    """Open the console's queue now: a bad --queue or --app is one line, exit 2."""
    from hueyscope.console.plugin import console

    try:
        console(ds).open_now()
    except ValueError as exc:
        raise BadInput(str(exc))


def _password(variable):
    """The password held in environment variable ``variable`` (None without
    the option); unset or empty is bad input, not an open server."""
    if variable is None:
        return None
    password = os.environ.get(variable, "")
    if not password:
        raise BadInput("--password-env %s: the environment variable %s is "
                       "unset or empty" % (variable, variable))
    return password


def _listen(host, port):
    """A listening socket, so a busy port is one clear error, not a traceback."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise BadInput("cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc))
    return sock


def _url_host(host):
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return "[%s]" % host if ":" in host else host


def _serve(ds, sock, open_url):
    """Run uvicorn on ``sock`` until SIGINT or SIGTERM, then return (exit 0)."""
    import asyncio

    import uvicorn

    asyncio.run(ds.invoke_startup())
    server = uvicorn.Server(uvicorn.Config(
        ds.app(), log_level="warning", lifespan="on", workers=1))
    # uvicorn re-raises the stop signal once it has shut down; handlers
    # installed here receive it, so a requested stop exits 0, not as killed.
    stopped_by = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stopped_by.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    if open_url:
        threading.Thread(target=_open_when_up, args=(server, open_url),
                         daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if stopped_by:
        click.echo("Stopped (%s)." % signal.Signals(stopped_by[0]).name, err=True)


def _open_when_up(server, url, timeout=30):
    deadline = time.monotonic() + timeout
    while not server.started and not server.should_exit:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    if server.started:
        webbrowser.open(url)
