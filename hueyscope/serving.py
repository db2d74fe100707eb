"""What ``hueyscope browse`` and ``hueyscope metrics --serve`` answer, and whom.

Both serve the event store over HTTP, usually on 127.0.0.1. Listening on
loopback alone does not keep a web page the operator visits from reading
them: the page's own host name can be made to resolve to 127.0.0.1 (DNS
rebinding), and the browser then sends the page's requests, with
``Host: attacker.example``, to the local server. So the servers answer only
the host names they were started for (:class:`HostNames`), and browse can
ask for a password (:func:`basic_auth_ok`).
"""
import base64
import binascii
import hmac
import ipaddress
import socket

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


def is_loopback(host):
    """True if ``host`` (a name or an address) only accepts local connections."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ip(name):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_name(header):
    """The host name of a ``Host`` header value, lower case, without its port
    or the brackets of an IPv6 address: ``[::1]:8001`` gives ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, _, port = header.rpartition(":")
    if name and port.isdigit() and ":" not in name:
        return name
    return header.rstrip(".")


class HostNames:
    """The ``Host`` header values a server started on ``bound`` answers.

    - the address or name it listens on;
    - for a loopback bind, localhost, 127.0.0.1 and ::1;
    - for a wildcard bind (0.0.0.0, ::), those, the machine's own names
      and any IP address (an address cannot be rebound to another
      machine, so a page can only send it to the server it names);
    - every name in ``extra`` (``--allow-host NAME``); ``*`` answers any.
    """

    def __init__(self, bound, extra=()):
        bound = bound.strip("[]").lower()
        self.any_address = bound in WILDCARDS
        self.any_name = "*" in extra
        names = {bound} if bound not in WILDCARDS else set()
        if self.any_address or is_loopback(bound):
            names.update(LOOPBACK_NAMES)
        if self.any_address:
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    names.add(name.lower())
        names.update(host_name(name) for name in extra if name != "*")
        self.names = frozenset(names)

    def allows(self, header):
        """True if a request with this ``Host`` header may be answered.

        No header at all (HTTP/1.0) is allowed: browsers always send one.
        """
        if self.any_name or header is None:
            return True
        name = host_name(header)
        if name in self.names:
            return True
        return self.any_address and _ip(name) is not None

    def refusal(self, header):
        """The body of the answer to a refused ``Host``: what to do about it."""
        return ("Host %r is not one this server answers (%s); start it with "
                "--allow-host NAME to add one.\n"
                % (header, ", ".join(sorted(self.names)) or "none"))


def basic_auth_ok(header, password):
    """True if an ``Authorization`` header carries ``password`` (HTTP Basic,
    any user name), compared in constant time."""
    if not header:
        return False
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    _, sep, given = decoded.partition(b":")
    return bool(sep) and hmac.compare_digest(given, password.encode("utf-8"))
