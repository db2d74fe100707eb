"""The HTTP endpoint of ``hueyscope metrics --serve``.

Only ``GET /metrics`` is served (``/`` says where the metrics are, anything
else is 404), and only to requests for the host names the server was
started for (:class:`hueyscope.serving.HostNames`), so a web page cannot
read it by pointing its own name at 127.0.0.1.

A scrape costs SQL over the whole store, so the work is bounded: the
metrics are computed in one worker thread, at most once per ``interval``
seconds; scrapes arriving while a computation runs wait for it and share
its result; a computation is stopped at ``time_limit`` seconds and the
scrape answered 503; at most :data:`MAX_CONNECTIONS` connections are
handled at once, and a client that sends nothing for
:data:`IDLE_SECONDS` is dropped.
"""
import concurrent.futures
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from hueyscope.metrics.store import TimeLimitExceeded

MAX_CONNECTIONS = 16
IDLE_SECONDS = 30
POINTER = b"hueyscope metrics: scrape /metrics\n"


class Families:
    """Metric families already computed, as a registry the encoders read."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


class Exposition:
    """The metric families of ``registry``, computed at most once per
    ``interval`` seconds and never two at a time."""

    def __init__(self, registry, interval=5.0, time_limit=10.0):
        self.registry = registry
        self.interval = interval
        self.time_limit = time_limit
        self._lock = threading.Lock()
        self._running = None  # the Future of the computation under way
        self._last = None  # (monotonic time it finished, families)
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="hueyscope-metrics")

    def families(self):
        """The families of the last computation if younger than the interval,
        else those of the one under way (started if none is).

        Raises TimeLimitExceeded past the time limit.
        """
        with self._lock:
            if self._last is not None and \
                    time.monotonic() - self._last[0] < self.interval:
                return self._last[1]
            if self._running is None:
                self._running = self._worker.submit(self._compute)
            running = self._running
        try:
            # The computation stops itself at the limit; the margin covers
            # waits SQLite cannot interrupt (a busy lock, a slow network).
            return running.result(timeout=self.time_limit + 1.0)
        except concurrent.futures.TimeoutError:
            raise TimeLimitExceeded(
                "computing the metrics took longer than %g s" % self.time_limit)

    def _compute(self):
        try:
            families = list(self.registry.collect())
            with self._lock:
                self._last = (time.monotonic(), families)
            return families
        finally:
            with self._lock:
                self._running = None

    def close(self):
        self._worker.shutdown(wait=False, cancel_futures=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "hueyscope-metrics"
    timeout = IDLE_SECONDS

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def _answer(self, send_body):
        from prometheus_client.exposition import choose_encoder

        host = self.headers.get("Host")
        if not self.server.hosts.allows(host):
            return self._send(400, self.server.hosts.refusal(host).encode(),
                              send_body)
        tokens = self.server.tokens
        if tokens and tokens.actor(self.headers.get("Authorization")) is None:
            return self._send(401, b"A bearer token is needed.\n", send_body,
                              headers=(("WWW-Authenticate",
                                        'Bearer realm="hueyscope metrics"'),))
        path = urlsplit(self.path).path
        if path == "/":
            return self._send(200, POINTER, send_body)
        if path != "/metrics":
            return self._send(404, b"Not found: the metrics are at /metrics\n",
                              send_body)
        try:
            families = self.server.exposition.families()
        except TimeLimitExceeded as exc:
            self.server.log("%s: answered 503" % exc)
            return self._send(503, ("%s\n" % exc).encode(), send_body)
        except Exception as exc:  # a bug: one line, not a traceback per scrape
            self.server.log("computing the metrics failed: %s: %s" % (
                type(exc).__name__, exc))
            return self._send(500, b"computing the metrics failed\n", send_body)
        encoder, content_type = choose_encoder(self.headers.get("Accept"))
        self._send(200, encoder(Families(families)), send_body, content_type)

    def _send(self, status, body, send_body, content_type="text/plain; charset=utf-8",
              headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format, *args):
        # No line per request (Prometheus scrapes all day long).
        pass


class MetricsServer(ThreadingHTTPServer):
    """A threading HTTP server handling at most MAX_CONNECTIONS at once."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, family, exposition, hosts, tokens=None):
        self.address_family = family
        self.exposition = exposition
        self.hosts = hosts
        self.tokens = tokens  # with tokens, a scrape must send one
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._logged = None
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            # Busy: close at once rather than queue work without bound.
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        # A scraper that hung up mid-answer is not worth a traceback.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            self.log("answering %s failed: %s: %s" % (
                client_address[0], type(exc).__name__, exc))

    def log(self, message):
        """One stderr line per new problem, not one per scrape."""
        if message != self._logged:
            print("hueyscope metrics: %s" % message, file=sys.stderr, flush=True)
            self._logged = message


def start(host, port, exposition, hosts, tokens=None):
    """A :class:`MetricsServer` on (host, port), serving in a daemon thread;
    with ``tokens`` (a :class:`hueyscope.serving.Tokens`), to scrapes that
    send one only.

    Raises OSError if the address cannot be bound.
    """
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server = MetricsServer(address[:2], family, exposition, hosts, tokens)
    threading.Thread(target=server.serve_forever, name="hueyscope-metrics-http",
                     daemon=True).start()
    return server
