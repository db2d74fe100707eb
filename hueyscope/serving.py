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
import os
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


MIN_TOKEN_CHARS = 20


def bearer_token(header):
    """The token of an ``Authorization: Bearer TOKEN`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Tokens:
    """API tokens and the actor each stands for: ``{token: actor id}``.

    A request that sends one (``Authorization: Bearer TOKEN``) acts as its
    actor; tokens are compared in constant time, every one of them, so the
    time taken says nothing of which came close.
    """

    def __init__(self, tokens=None):
        self._tokens = [(t.encode("utf-8"), actor)
                        for t, actor in (tokens or {}).items()]

    def __bool__(self):
        return bool(self._tokens)

    @property
    def actors(self):
        return {actor for _, actor in self._tokens}

    def actor(self, header):
        """The actor id of the token ``header`` carries, or None."""
        given = bearer_token(header)
        if given is None:
            return None
        given, found = given.encode("utf-8"), None
        for token, actor in self._tokens:
            if hmac.compare_digest(given, token) and found is None:
                found = actor
        return found


def tokens_from_env(variables):
    """:class:`Tokens` of the environment variables named ``variables``,
    each standing for the actor ``api:VARIABLE``. ValueError (one line)
    for one unset, empty, or too short to be a secret."""
    tokens = {}
    for variable in variables:
        value = os.environ.get(variable, "")
        if not value:
            raise ValueError("--token-env %s: the environment variable %s is "
                             "unset or empty" % (variable, variable))
        if len(value) < MIN_TOKEN_CHARS or value != value.strip():
            raise ValueError(
                "--token-env %s: a token needs at least %d characters and no "
                "spaces around it; make one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe())'" % (variable, MIN_TOKEN_CHARS))
        tokens[value] = "api:%s" % variable
    return Tokens(tokens)


class Access:
    """Who browse lets in: requests for ``hosts``, with ``password`` if set
    or one of ``tokens``; and who a token's request is from."""

    def __init__(self, hosts, password=None, tokens=None):
        self.hosts = hosts
        self.password = password or None
        self.tokens = tokens or Tokens()


def access(datasette):
    """The :class:`Access` of a Datasette that browse built
    (:func:`hueyscope.browse.app.make_datasette`), or None."""
    return getattr(datasette, "hueyscope_access", None)
