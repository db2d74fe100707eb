"""Redaction: what of a task's arguments and errors is never stored in clear.

Task arguments carry credentials (API keys, bearer tokens, database URLs),
and so do the errors they raise. Everything hueyscope copies out of a task
passes through one :class:`Redaction` first: the recorder's args, kwargs,
error messages and tracebacks, the failed set's reasons, and what commands
show of text already stored (a store written before this module existed is
scrubbed again when it is shown). Both the queue and the recorder import it,
so a message is redacted the same way on both sides, and fingerprinted the
same way.

Two rules, each applied wherever it can be:

- **By key.** A value stored under a secret-looking key becomes ``***``,
  whatever it is (a string, a number, a whole nested dict). A key is
  secret-looking when, lower-cased and stripped of ``-``, ``_``, ``.`` and
  spaces, it equals or ends with one of the names of :data:`DEFAULT_KEYS`
  (or of the names added with ``--redact``), or with its plural:
  ``API-KEY``, ``X-Api-Key``, ``apiKey``, ``access_token``,
  ``Set-Cookie``, ``db_password``, ``client_secrets`` all match;
  ``token_count`` and ``session_id`` do not (the name must be at the end).
  Keys count in dicts at any depth, in namedtuples (their field names), and
  in text: ``password=...``, ``token: ...``, ``'api_key': '...'``,
  ``"secret": "..."`` inside a string, a repr (a dataclass's, a dict's) or
  an error message.
- **By shape, in any text.** URL userinfo (``scheme://user:pass@host``
  becomes ``scheme://user:***@host``, ``scheme://token@host`` becomes
  ``scheme://***@host``), ``Bearer X`` and ``Basic X`` credentials (a Basic
  one when it decodes as ``user:password``), PEM private-key blocks, JSON
  Web Tokens and a few well-known token shapes (GitHub, GitLab, Slack, AWS
  access key ids, Stripe and ``sk-`` API keys).

Structures are copied, never changed in place. Nesting deeper than
:data:`MAX_DEPTH` is replaced whole by :data:`DEEP`, a structure that holds
itself by ``[...]``/``{...}``, and past :data:`MAX_VALUES` values the rest
by :data:`TOO_MANY`: nothing beyond a limit is stored in clear. A value JSON
has no type for is stored as its repr, scrubbed as text.
"""
import base64
import binascii
import re

from hueyscope import storable

MARK = "***"
# Nesting deeper than this is replaced whole: no task argument is that deep
# by design, and a scan without a bound is a scan an argument can stall.
MAX_DEPTH = 32
DEEP = "<redacted: nested deeper than %d levels>" % MAX_DEPTH
# Values (container items) looked at per argument; the rest are replaced.
MAX_VALUES = 100_000
TOO_MANY = "<redacted: more than %d values>" % MAX_VALUES
# The longest error message and traceback stored, and how much of a longer
# one is scanned to make them (a cut secret must still be recognisable, so
# the cut comes after the scrubbing).
ERROR_CHARS = 4000
TRACEBACK_CHARS = 20000
SCAN_CHARS = 65536

# Names a secret-looking key equals or ends with, normalised (see normalise).
DEFAULT_KEYS = (
    "password", "passwd", "passphrase", "secret", "secretkey", "token",
    "accesstoken", "refreshtoken", "apikey", "accesskey", "privatekey",
    "clientsecret", "authorization", "auth", "cookie", "setcookie",
    "session", "dsn", "credentials", "credential",
)
# Keys whose value in text is a header's: it runs to the end of the line
# (a cookie is "a=1; b=2"), after the scheme word of an authorization.
_HEADER_KEYS = ("authorization", "cookie")
_SCHEMES = re.compile(
    r"(?i)(bearer|basic|digest|token|negotiate|ntlm|hoba|mutual|"
    r"aws4-hmac-sha256)[ \t]+(?=\S)")

_DROP = str.maketrans("", "", "-_. \t")


def normalise(key):
    """``key`` lower-cased, without ``-``, ``_``, ``.`` and spaces."""
    return key.lower().translate(_DROP)


def keys_of(spec):
    """The key list a ``--redact`` value asks for, normalised.

    ``spec`` is the option's text (``"pin, -session"``) or an iterable of
    names: each name is added to :data:`DEFAULT_KEYS`, a name starting with
    ``-`` removes one of them; an empty one means the defaults alone.
    """
    if spec is None:
        spec = ()
    elif isinstance(spec, str):
        spec = spec.split(",")
    keys = list(DEFAULT_KEYS)
    for name in spec:
        name = name.strip()
        drop = name.startswith("-")
        name = normalise(name.lstrip("-"))
        if not name:
            continue
        if drop:
            keys = [k for k in keys if k != name]
        elif name not in keys:
            keys.append(name)
    return tuple(keys)


# -- text ---------------------------------------------------------------------

# Worth a closer look: a key separator, URL userinfo, or a token shape.
_HINT = re.compile(r"[:=@]|bearer|basic|-----BEGIN|eyJ|gh[pousr]_|glpat-|"
                   r"xox[abposr]-|AKIA|[sr]k_|sk-", re.I)
# scheme://userinfo@ -- the userinfo up to the last @ before the path, so a
# password holding an unescaped @ is redacted whole.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#'\"<>]+)@")
_BEARER = re.compile(r"(?i)\b(bearer)([ \t]+)(?![*])([A-Za-z0-9\-._~+/]+=*)")
_BASIC = re.compile(r"(?i)\b(basic)([ \t]+)([A-Za-z0-9+/]{4,}={0,2})(?![\w+/=])")
_SHAPES = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(?:-----END \1-----|\Z)"
    r"|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}"
    r"|\bsk-[A-Za-z0-9_-]{20,}", re.S)
# A key and its separator: up to three words (``invalid api key:``), quoted
# or not, then ``=``, ``==`` or ``:``.
_KEY = re.compile(
    r"(?<![\w-])(?:\\?[\"'])?([A-Za-z_][\w.-]*(?: [A-Za-z_][\w.-]*){0,2})"
    r"(?:\\?[\"'])?[ \t]*(==?|:)[ \t]*")
# Where an unquoted value ends.
_VALUE_END = re.compile(r"[\s,;&'\"<>)\]}]")
_CLOSE = {"{": "}", "[": "]", "(": ")"}


def _userinfo(match):
    scheme, info = match.group(1), match.group(2)
    if info.startswith(MARK) or info.endswith(":" + MARK):
        return match.group(0)  # already redacted
    if ":" in info:
        return "%s%s:%s@" % (scheme, info.split(":", 1)[0], MARK)
    return "%s%s@" % (scheme, MARK)


def _basic(match):
    # Only a credential: base64 of "user:password".
    try:
        decoded = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    if b":" not in decoded:
        return match.group(0)
    return match.group(1) + match.group(2) + MARK


def _quoted_end(text, start, quote):
    """Index just past the closing ``quote`` of a string opened at ``start``."""
    i, n = start, len(text)
    if quote.startswith("\\"):  # \"...\" : JSON inside a JSON or repr string
        end = text.find(quote, start)
        return n if end < 0 else end
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == quote:
            return i
        i += 1
    return n


def _bracket_end(text, start):
    """Index just past the bracket matching the one at ``start`` (or the end)."""
    depth, i, n, quote = 0, start, len(text), None
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


class Redaction:
    """The redaction of one configuration: its keys, see :func:`keys_of`."""

    def __init__(self, spec=None):
        self.keys = keys_of(spec)
        self._ends = tuple(self.keys)

    @classmethod
    def of(cls, value):
        """``value`` if it is a Redaction already, else one built from it."""
        return value if isinstance(value, cls) else cls(value)

    def secret_key(self, key):
        """Whether the value stored under ``key`` is redacted whole."""
        if not isinstance(key, str) or not self._ends:
            return False
        key = normalise(key)
        return key.endswith(self._ends) or (
            key.endswith("s") and key[:-1].endswith(self._ends))

    # -- text --

    def text(self, text):
        """``text`` with every credential it shows replaced by ``***``."""
        if not isinstance(text, str) or not _HINT.search(text):
            return text
        if "://" in text:
            text = _USERINFO.sub(_userinfo, text)
        text = _SHAPES.sub(MARK, text)
        text = _BEARER.sub(r"\1\2" + MARK, text)
        text = _BASIC.sub(_basic, text)
        return self._pairs(text)

    def message(self, text):
        """An error message as stored: scrubbed, then cut to ERROR_CHARS."""
        return self.text(text[:SCAN_CHARS])[:ERROR_CHARS]

    def traceback(self, text):
        """A traceback as stored: scrubbed, then its last TRACEBACK_CHARS."""
        return self.text(text[-SCAN_CHARS:])[-TRACEBACK_CHARS:]

    def _pairs(self, text):
        """``key=value`` / ``key: value`` pairs of secret keys redacted."""
        out, pos, n = [], 0, len(text)
        search = _KEY.search
        while True:
            m = search(text, pos)
            if m is None:
                break
            key = m.group(1)
            if not self.secret_key(key):
                pos = m.end(1)
                continue
            start = m.end()
            end, replacement = self._value(text, start, normalise(key))
            out.append((start, end, replacement))
            pos = max(end, m.end())
            if pos >= n:
                break
        if not out:
            return text
        pieces, last = [], 0
        for start, end, replacement in out:
            pieces.append(text[last:start])
            pieces.append(replacement)
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def _value(self, text, start, key):
        """(end, replacement) of the value that starts at ``start``."""
        n = len(text)
        if start >= n:
            return start, ""
        c = text[start]
        if c in "'\"" or (c == "\\" and text[start + 1:start + 2] in ("'", '"')):
            quote = text[start:start + 2] if c == "\\" else c
            end = _quoted_end(text, start + len(quote), quote)
            return min(end + len(quote), n), quote + MARK + (
                quote if end < n else "")
        if c in _CLOSE:
            return _bracket_end(text, start), MARK
        if text.startswith(MARK, start):
            return start + len(MARK), MARK
        keep = ""
        if key.endswith(_HEADER_KEYS) or key.endswith(
                tuple(k + "s" for k in _HEADER_KEYS)):
            scheme = _SCHEMES.match(text, start) if "auth" in key else None
            if scheme:
                keep = scheme.group(0)
                start = scheme.end()
                if text.startswith(MARK, start):
                    return start + len(MARK), keep + MARK
            end = text.find("\n", start)
            end = n if end < 0 else end
            if end > start and text[end - 1] == "\r":
                end -= 1
            if end == start:
                return start, keep
            return end, keep + MARK
        m = _VALUE_END.search(text, start)
        end = n if m is None else m.start()
        if end == start:
            return start, ""
        return end, MARK

    # -- structures --

    def value(self, value):
        """A copy of ``value`` ready for JSON, with every secret in it redacted.

        Dicts, lists and tuples are copied (tuples as lists, as JSON has
        them); strings scrubbed as text; numbers, booleans and None kept;
        anything else becomes its repr, scrubbed as text.
        """
        return self._copy(value, 0, set(), [MAX_VALUES])

    def _copy(self, value, depth, path, budget):
        if isinstance(value, str):
            return self.text(str.__str__(value))
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if not isinstance(value, (dict, list, tuple)):
            return self.text(storable.repr_of(value))
        if depth >= MAX_DEPTH:
            return DEEP
        if id(value) in path:
            return "{...}" if isinstance(value, dict) else "[...]"
        budget[0] -= len(value)
        if budget[0] < 0:
            return TOO_MANY
        path.add(id(value))
        try:
            depth += 1
            if isinstance(value, dict):
                return {self._key(k): MARK if self.secret_key(k) else
                        self._copy(v, depth, path, budget)
                        for k, v in value.items()}
            fields = getattr(value, "_fields", None)  # a namedtuple
            if isinstance(value, tuple) and isinstance(fields, tuple) and \
                    len(fields) == len(value):
                return [MARK if self.secret_key(f) else
                        self._copy(v, depth, path, budget)
                        for f, v in zip(fields, value)]
            return [self._copy(v, depth, path, budget) for v in value]
        finally:
            path.discard(id(value))

    def _key(self, key):
        """A dict key as JSON takes it: text scrubbed, numbers kept."""
        if isinstance(key, str):
            return self.text(str.__str__(key))
        if key is None or isinstance(key, (bool, int, float)):
            return key
        return self.text(storable.repr_of(key))


DEFAULT = Redaction()

