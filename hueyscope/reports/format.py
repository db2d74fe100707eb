"""Formatting for the report pages: times, durations, counts, names.

Every function takes a value straight from the event store (possibly None)
and returns text; they are the Jinja filters of the report templates.
"""
import datetime
import hashlib
import re


def iso(ts):
    """Unix seconds -> ISO-8601 UTC, to the second: 2024-06-01T12:00:05Z."""
    if ts is None:
        return "–"
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(value):
    """A duration for humans: 0.4 ms, 12 ms, 1.25 s, 3 min 20 s, 2 h 5 min."""
    if value is None:
        return "–"
    if value < 0.001:
        return "%.2f ms" % (value * 1000)
    if value < 1:
        return "%.3g ms" % (value * 1000)
    if value < 60:
        return "%.3g s" % value
    if value < 3600:
        minutes, rest = divmod(int(round(value)), 60)
        return "%d min %d s" % (minutes, rest) if rest else "%d min" % minutes
    if value < 86400 * 2:
        hours, rest = divmod(int(round(value)) // 60, 60)
        return "%d h %d min" % (hours, rest) if rest else "%d h" % hours
    return "%.1f days" % (value / 86400)


def number(value):
    """A count with thousands separators: 1,234; 2 decimals for fractions."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return "{:,.2f}".format(value)
    return "{:,}".format(int(value))


def percent(part, whole):
    """``part`` as a share of ``whole``: 12.5 %; "<0.1 %" rather than 0.0 %."""
    if not whole:
        return "–"
    value = 100.0 * (part or 0) / whole
    if value and value < 0.1:
        return "<0.1 %"
    return "%.1f %%" % value


def edge_label(value):
    """A run time histogram edge: 2.5 ms, 10 s."""
    if value < 1:
        return "%g ms" % (value * 1000)
    return "%g s" % value


def slug(text):
    """A file name that is safe whatever the text: letters, digits, dashes.

    A hash of the original is appended, so two names that differ only in
    punctuation ('a/b' and 'a.b') still get two files.
    """
    text = "" if text is None else str(text)
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"
    return "%s-%s" % (base, hashlib.sha1(text.encode("utf-8", "replace"))
                      .hexdigest()[:8])


def tilde_encode(value):
    """Datasette's encoding of primary keys in URL paths (spaces become +)."""
    return "".join(
        c if re.match(r"[A-Za-z0-9_-]", c) else "+" if c == " " else
        "".join("~%02X" % b for b in c.encode("utf-8"))
        for c in str(value))




def plural(count, noun, nouns=None):
    """'1 task', '2 tasks', '1,234 tasks': a count with its noun agreeing.

    ``nouns`` is the plural when it is not the noun plus "s".
    """
    count = count or 0
    word = noun if count == 1 else (nouns or noun + "s")
    return "%s %s" % (number(count), word)


# A UUID run id (synthetic stores, older recorders): its first 8 hex digits
# tell runs apart well enough on a page that also shows host, pid and start.
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def short_id(text, width=24):
    """A readable abbreviation of an id; the whole id when it is short.

    Run ids are ``host:pid:started``: cutting them at 8 characters left
    ``vm:9784:``, which names no run. Short ids are kept whole; a UUID keeps
    its first 8 digits; anything else long keeps its start and its end
    (where the pid and start time are). Pages put the whole id in a title.
    """
    if text is None:
        return "–"
    text = str(text)
    if len(text) <= width:
        return text
    if _UUID.match(text):
        return text[:8] + "…"
    tail = 12
    return text[:width - tail - 1] + "…" + text[-tail:]


def step_label(step):
    """A bucket length as words: 'second', '15 s', 'minute', '2 h', 'day'."""
    names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
    if step in names:
        return names[step]
    if step < 60:
        return "%d s" % step
    if step < 3600:
        return "%d min" % (step // 60)
    if step < 86400:
        return "%d h" % (step // 3600)
    return "%d days" % (step // 86400)


# Characters that reorder the text around them: the embeddings and
# overrides (U+202A-U+202E), the isolates (U+2066-U+2069) and the marks
# (U+200E, U+200F, U+061C). In a task name, an argument or an error they
# make "safe\u202egnp.exe" display as "safeexe.png"; the report shows them
# as their escapes instead.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_BIDI_ESCAPES = {ord(c): "\\u%04x" % ord(c) for c in BIDI}


def bidi_visible(value):
    """``value`` with each bidi control shown as its escape (``\\u202e``).

    The report's Jinja finaliser: every ``{{ ... }}`` of every page goes
    through it. Other text is returned as it is; HTML built by a template
    (``Markup``) stays HTML, as an escape adds no markup.
    """
    if isinstance(value, str) and not value.isascii():
        return value.translate(_BIDI_ESCAPES)
    return value


def bidi_visible_in(value):
    """``value`` (a chart's spec) with bidi controls escaped in all its text,
    keys included, for data that reaches the page as JSON."""
    if isinstance(value, str):
        return bidi_visible(value)
    if isinstance(value, dict):
        return {bidi_visible_in(k): bidi_visible_in(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [bidi_visible_in(v) for v in value]
    return value
