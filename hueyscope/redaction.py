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

# Short texts are tested with one regex; longer ones with substring tests.
_HINT = re.compile(r"[:=@]|[Bb]earer|BEARER|[Bb]asic|BASIC|-----BEGIN|eyJ|"
                   r"gh[pousr]_|glpat-|xox|AKIA|k_live_|k_test_|sk-")
_SHORT = 256
# scheme://userinfo@ -- the userinfo up to the last @ before the path, so a
# password holding an unescaped @ is redacted whole.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#'\"<>]+)@")
_BEARER = re.compile(r"(?i)\b(bearer)([ \t]+)(?![*])([A-Za-z0-9\-._~+/]+=*)")
_BASIC = re.compile(r"(?i)\b(basic)([ \t]+)([A-Za-z0-9+/]{4,}={0,2})(?![\w+/=])")
# Token shapes, each tried where its literal beginning (_SHAPE_START) is
# found: one regex of all of them, tried at every position of a long text,
# is ten times slower.
_SHAPE_START = re.compile(r"-----BEGIN|eyJ|gh[pousr]_|glpat-|xox|AKIA|"
                          r"k_(?:live|test)_|sk-")
_SHAPES = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(?:-----END \1-----|\Z)"
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}\b"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}"
    r"|sk-[A-Za-z0-9_-]{20,}", re.S)


def _shapes(text):
    """``text`` with each token of a known shape replaced."""
    out, last = [], 0
    for start in _SHAPE_START.finditer(text):
        at = start.start()
        if text.startswith("k_", at):  # sk_live_..., rk_test_...
            at -= 1
        if at < last or (at and not text.startswith("-----", at) and (
                text[at - 1].isalnum() or text[at - 1] == "_")):
            continue  # inside a word, or a token already replaced
        m = _SHAPES.match(text, at)
        if m is not None:
            out.append(text[last:at])
            out.append(MARK)
            last = m.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


# A key's separator: ``=``, ``==`` or ``:``, with the blanks around it. The
# key is the run of key characters before it (and before a closing quote):
# as a key matches by its end, "invalid api key: x" is found by "apikey".
_SEPARATOR = re.compile(r"[ \t]*(?:==?|:)[ \t]*")
_KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.- "
_LONGEST_KEY = 80
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
    """Index of the closing ``quote`` of a string whose text starts at
    ``start`` (the text's end when it is not closed)."""
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
        # Key -> whether it is secret: the same few keys come back in
        # every call of a task. Bounded: cleared when full.
        self._known = {}
        self._texts = {}

    @classmethod
    def of(cls, value):
        """``value`` if it is a Redaction already, else one built from it."""
        return value if isinstance(value, cls) else cls(value)

    def secret_key(self, key):
        """Whether the value stored under ``key`` is redacted whole."""
        if not isinstance(key, str) or not self._ends:
            return False
        known = self._known.get(key)
        if known is None:
            n = normalise(key)
            known = n.endswith(self._ends) or (
                n.endswith("s") and n[:-1].endswith(self._ends))
            if len(self._known) >= 10_000:
                self._known.clear()
            self._known[key] = known
        return known

    # -- text --

    def text(self, text):
        """``text`` with every credential it shows replaced by ``***``."""
        if not isinstance(text, str):
            return text
        if len(text) < _SHORT:
            if not _HINT.search(text):
                return text
            # The same short values come back in call after call (a URL, a
            # header): remembered, bounded.
            done = self._texts.get(text)
            if done is None:
                done = self._scrub(text)
                if len(self._texts) >= 10_000:
                    self._texts.clear()
                self._texts[text] = done
            return done
        return self._scrub(text)

    def _scrub(self, text):
        colon, equals = ":" in text, "=" in text
        if colon and "@" in text and "://" in text:
            text = _USERINFO.sub(_userinfo, text)
        text = _shapes(text)
        low = text.lower()
        if "bearer" in low or "basic" in low:
            text = _BEARER.sub(r"\1\2" + MARK, text)
            text = _BASIC.sub(_basic, text)
        if colon or equals:
            text = self._pairs(text)
        return text

    def message(self, text):
        """An error message as stored: scrubbed, then cut to ERROR_CHARS."""
        return self.text(text[:SCAN_CHARS])[:ERROR_CHARS]

    def traceback(self, text):
        """A traceback as stored: scrubbed, then its last TRACEBACK_CHARS."""
        return self.text(text[-SCAN_CHARS:])[-TRACEBACK_CHARS:]

    def _pairs(self, text):
        """``key=value`` / ``key: value`` pairs of secret keys redacted."""
        out, pos, n = [], 0, len(text)
        search = _SEPARATOR.search
        while pos < n:
            m = search(text, pos)
            if m is None:
                break
            before = text[max(pos, m.start() - _LONGEST_KEY):m.start()]
            if before[-1:] in ("'", '"'):  # a quoted key: 'api_key': ...
                before = before[:-2] if before[-2:-1] == "\\" else before[:-1]
            key = before[len(before.rstrip(_KEY_CHARS)):]
            if not key.strip() or not self.secret_key(key):
                pos = m.end()
                continue
            start = m.end()
            end, replacement = self._value(text, start, normalise(key))
            out.append((start, end, replacement))
            pos = max(end, start)
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
        cls = type(value)
        if cls is str:
            return self.text(value)
        if cls is int or cls is float or cls is bool or value is None:
            return value
        if isinstance(value, str):  # a subclass: the plain text it holds
            return self._copy(str.__str__(value), depth, path, budget)
        if isinstance(value, (int, float)):
            return value
        if not isinstance(value, (dict, list, tuple)):
            return self._copy(storable.repr_of(value), depth, path, budget)
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
        if type(key) is str:
            return self.text(key)
        if isinstance(key, str):
            return self.text(str.__str__(key))
        if key is None or isinstance(key, (bool, int, float)):
            return key
        return self.text(storable.repr_of(key))


DEFAULT = Redaction()

