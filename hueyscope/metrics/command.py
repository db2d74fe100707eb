"""``hueyscope metrics``: the event store as Prometheus / OpenMetrics metrics.

Two ways out, together or alone: an HTTP endpoint Prometheus scrapes
(``--serve HOST:PORT``), or a file node_exporter's textfile collector reads
(``--textfile PATH``, replaced atomically, once or ``--every`` N seconds).
Every value is computed from the event store (and the queue's tables) when
it is read: see :mod:`hueyscope.metrics.store`.

Everything is checked before anything is written or bound: a missing event
store, an unwritable textfile folder and a busy port are each one
``Error:`` line and exit 2, with no file left behind. The endpoint
(:mod:`hueyscope.metrics.server`) serves ``/metrics`` only, to the host
names it was started for, computing at most once per ``--min-interval``
and never longer than ``--time-limit``.
"""
import os
import signal
import threading

import click

from hueyscope.options import (BadInput, FloatRange, allow_host_option,
                               settings_options, token_env_option)

DEFAULT_PORT = 9808


def parse_listen(text):
    """(host, port) of ``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1).

    Raises ValueError (one line) for anything else.
    """
    host, sep, port = str(text).strip().rpartition(":")
    if not sep:
        host = ""
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ValueError("--serve must be HOST:PORT with a port from 0 to "
                         "65535, not %r" % text)
    return host, number


def check_textfile(path):
    """Raise ValueError unless ``path`` can be written atomically.

    The file is written beside itself and renamed over the old one, so its
    folder must exist and be writable; nothing is created to find out.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError("--textfile %s is a folder, not a file" % path)
    if not os.path.isdir(folder):
        raise ValueError("cannot write --textfile %s: no folder %s" % (path, folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError("cannot write --textfile %s: folder %s is not "
                         "writable" % (path, folder))


def make_registry(settings, time_limit=None):
    """A registry holding only the collector of these settings' store and queue."""
    from prometheus_client import CollectorRegistry

    from hueyscope.metrics import queue_tables
    from hueyscope.metrics.store import StoreCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(settings.events,
                                     queue_tables.for_settings(settings),
                                     time_limit=time_limit))
    return registry


def serve(registry, host, port, hosts, interval, time_limit, tokens=None):
    """Start the HTTP endpoint in a thread; the server (bound to its port)."""
    from hueyscope.metrics import server as http

    exposition = http.Exposition(registry, interval, time_limit)
    try:
        return http.start(host, port, exposition, hosts, tokens)
    except OSError as exc:
        exposition.close()
        raise BadInput("cannot listen on %s:%d: %s" % (
            host, port, exc.strerror or exc))


def write_textfile(registry, path):
    """Write the metrics to ``path`` through a temporary file and a rename.

    A new file follows the umask; a rewritten one keeps the mode of the
    file it replaces (see :func:`hueyscope.filemodes.replace_file`).
    Stopped by a signal while reading, it writes nothing: the last complete
    file stays.
    """
    from prometheus_client import generate_latest

    from hueyscope.filemodes import replace_file
    from hueyscope.metrics.store import TimeLimitExceeded
    from hueyscope.readonly import QueryStopped, stopping

    try:
        replace_file(path, generate_latest(registry))
    except QueryStopped:
        if not stopping():
            raise
    except OSError as exc:
        raise BadInput("cannot write --textfile %s: %s" % (
            path, exc.strerror or exc))
    except TimeLimitExceeded as exc:
        raise BadInput("not writing --textfile %s: %s" % (path, exc))


def _rewrite(registry, path):
    """Write again; a failure (a full disk) is logged and the next round
    tries again, the last complete file staying in place meanwhile."""
    try:
        write_textfile(registry, path)
    except BadInput as exc:
        click.echo("hueyscope metrics: %s" % exc.message, err=True)


def _stop_event():
    """An Event set by SIGINT or SIGTERM: a requested stop, exit 0.

    The signal also stops a query under way (it is checked between steps
    of SQLite's work), so a stop never waits for the store.
    """
    from hueyscope.readonly import stop_queries

    stop = threading.Event()
    stop.signum = None

    def handler(signum, frame):
        stop.signum = signum
        stop.set()
        stop_queries()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


@click.command(short_help="Serve or write Prometheus metrics of the event store.")
@settings_options(only=("queue", "events"))
@click.option("--serve", "listen", metavar="HOST:PORT", default=None,
              help="Serve the metrics over HTTP at http://HOST:PORT/metrics "
                   "(%d is the usual port; 0 picks a free one)." % DEFAULT_PORT)
@click.option("--textfile", metavar="PATH", default=None,
              help="Write the metrics to PATH, replacing it atomically, for "
                   "node_exporter's textfile collector (name it *.prom).")
@click.option("--every", type=FloatRange(min=0.1), default=None,
              metavar="SECONDS",
              help="With --textfile: rewrite the file every SECONDS until "
                   "stopped (default: write it once and exit).")
@click.option("--min-interval", type=FloatRange(min=0), default=5.0,
              show_default=True, metavar="SECONDS",
              help="With --serve: compute the metrics at most once every "
                   "SECONDS; scrapes in between, and scrapes arriving while "
                   "they are computed, get the same result.")
@click.option("--time-limit", type=FloatRange(min=0, min_open=True),
              default=10.0, show_default=True, metavar="SECONDS",
              help="Stop computing the metrics after SECONDS: the scrape is "
                   "answered 503, the textfile is left as it was.")
@allow_host_option
@token_env_option
def metrics(settings, listen, textfile, every, min_interval, time_limit,
            allow_hosts, token_envs):
    """Serve or write Prometheus / OpenMetrics metrics of the event store.

    Task outcomes, run time and queue wait histograms per task, queue depth
    and the oldest pending task's age, consumers alive and events the
    recorders dropped come from the event store (--events); leases held and
    the failed set from the queue's tables (--queue: a SQLite file or a
    postgresql:// URL; left out for Redis). Every value is computed in SQL
    when it is read, so a scrape shows the store as it is then.

    \b
        hueyscope metrics --serve 127.0.0.1:9808
        hueyscope metrics --textfile /var/lib/node_exporter/hueyscope.prom
        hueyscope metrics --textfile hueyscope.prom --every 15

    The endpoint serves /metrics only, and only to requests for the host
    it listens on (and localhost): --allow-host adds names. With
    --token-env VAR a scrape must send the token in $VAR (Prometheus:
    authorization: {credentials_file: ...}); others get 401.

    SIGINT or SIGTERM stops it (exit 0).
    """
    from hueyscope.events.schema import check_event_store
    from hueyscope.serving import HostNames, is_loopback, tokens_from_env

    if not listen and not textfile:
        raise BadInput("give --serve HOST:PORT, --textfile PATH or both "
                       "(see hueyscope metrics --help)")
    if every is not None and not textfile:
        raise BadInput("--every rewrites the --textfile: give one")
    if token_envs and not listen:
        raise BadInput("--token-env guards the --serve endpoint: give one")
    tokens = tokens_from_env(token_envs)
    address = parse_listen(listen) if listen else None
    if textfile:
        check_textfile(textfile)
    check_event_store(settings.events, must_exist=True)
    registry = make_registry(settings, time_limit)
    stop = _stop_event()
    server = None
    if address:
        host = address[0]
        server = serve(registry, host, address[1], HostNames(host, allow_hosts),
                       min_interval, time_limit, tokens)
        if not is_loopback(host) and not tokens:
            click.secho(
                "Warning: listening on %s: anyone who can reach this machine "
                "can read the metrics (task, queue and host names)." % host,
                fg="yellow", err=True)
        click.echo("Serving metrics at http://%s:%d/metrics" % (
            _url_host(host), server.server_port))
    try:
        if textfile:
            write_textfile(registry, textfile)
            while every is not None and not stop.wait(every):
                _rewrite(registry, textfile)
        if server is not None and every is None:
            stop.wait()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
            server.exposition.close()
    if stop.signum is not None:
        click.echo("Stopped (%s)." % signal.Signals(stop.signum).name, err=True)


def _url_host(host):
    """``host`` as it goes in a URL: the address listened on, as given."""
    return "[%s]" % host if ":" in host else host
