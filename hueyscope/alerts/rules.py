"""The alert rules, their defaults, and ``rules.toml``, which overrides them.

Every rule measures one number and fires when it is above the rule's
``threshold`` -- except ``disk_free``, which fires when the free space is
below its floor. A rules file has one table per rule it changes; a rule it
does not name keeps its defaults::

    [oldest_pending]
    threshold = "10m"          # oldest pending task older than this

    [failure_rate]
    threshold = "25%"          # or 0.25
    window = "1h"
    min_finished = 50

    [lost_task]
    enabled = false

    [disk_free]
    threshold = "5%"           # of the file system's size
    min_free = "5GB"           # and never less than this

Durations are seconds (a number) or a number and a unit (``90s``, ``15m``,
``12h``, ``1d``); sizes are bytes (a number) or a number and a unit (``500MB``,
``1GB``, ``2GiB``). Anything else -- a rule or key this version does not
know, a value of the wrong kind, a file that is not TOML -- is a ValueError
with a one-line message, which commands turn into exit code 2.
"""
import dataclasses
import re

from hueyscope.settings import parse_duration
from hueyscope.signals import STALE_SECONDS


def duration(value):
    """Seconds, from a number or a string such as ``15m``."""
    if isinstance(value, bool):
        raise ValueError("%r is not a duration" % value)
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("duration must be more than zero, not %r" % value)
        return float(value)
    return parse_duration(value)


def fraction(value):
    """A share between 0 and 1, from ``0.1`` or ``"10%"``."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            value = float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError("%r is not a percentage" % value) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%r is not a share: use 0.1 or \"10%%\"" % (value,))
    if not 0 <= value <= 1:
        raise ValueError("%r is not between 0 and 1 (0 %% and 100 %%)" % value)
    return float(value)


SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
              "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
              "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def size(value):
    """Bytes, from a number or a string such as ``500MB``, ``1GB``, ``2GiB``.

    kB, MB, GB and TB are powers of 1000 (as ``df -H`` and disk vendors
    count); KiB, MiB, GiB and TiB powers of 1024.
    """
    if isinstance(value, bool):
        raise ValueError("%r is not a size" % value)
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("size must be zero or more, not %r" % value)
        return int(value)
    match = _SIZE.match(str(value))
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise ValueError("%r is not a size: use bytes or a number and a unit, "
                         "one of kB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. "
                         "500MB, 1GB)" % (value,))
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


def count(value):
    """A whole number, zero or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("%r is not a whole number of zero or more" % (value,))
    return value


def flag(value):
    if not isinstance(value, bool):
        raise ValueError("%r is not true or false" % (value,))
    return value


@dataclasses.dataclass(frozen=True)
class Rule:
    """A rule: its name, what it means, and each parameter's kind and default."""

    name: str
    description: str
    params: dict  # name -> (parser, default)

    def configure(self, overrides):
        """The rule's parameters with ``overrides`` (a rules.toml table) applied."""
        values = {key: default for key, (_, default) in self.params.items()}
        for key, value in overrides.items():
            if key == "enabled":
                continue
            if key not in self.params:
                raise ValueError("rule %s has no setting %r (it has: %s)" % (
                    self.name, key, ", ".join(["enabled", *self.params])))
            parse = self.params[key][0]
            try:
                values[key] = parse(value)
            except ValueError as exc:
                raise ValueError("rule %s, %s: %s" % (self.name, key, exc)) from None
        return values


# The default rules, in the order they are checked and reported.
RULES = {rule.name: rule for rule in (
    Rule("oldest_pending",
         "the oldest task waiting in the queue has waited longer than threshold",
         {"threshold": (duration, 300.0)}),
    Rule("failure_rate",
         "more than threshold of the tasks finished in the last window failed "
         "(only once at least min_finished finished)",
         {"threshold": (fraction, 0.10), "window": (duration, 900.0),
          "min_finished": (count, 10)}),
    Rule("lost_task",
         "more than threshold tasks were lost in the last window: executing "
         "under a run that stopped or fell silent for stale, or parked as lost",
         {"threshold": (count, 0), "window": (duration, 900.0),
          "stale": (duration, STALE_SECONDS)}),
    Rule("no_consumer",
         "no consumer run has sent a heartbeat for longer than threshold",
         {"threshold": (duration, 60.0)}),
    Rule("missed_tick",
         "a periodic task's last due tick is older than threshold and "
         "nothing enqueued or ran it since (looked for over lookback)",
         {"threshold": (duration, 120.0), "lookback": (duration, 86400.0)}),
    # 10 %: the share df users alarm on, and room for a day or more of
    # growth on most disks; 1 GB: the floor for small disks, where 10 % is
    # little, so a full disk (which stops the queue too) is never a surprise.
    Rule("disk_free",
         "the file system holding the event store (or the SQLite queue) has "
         "less free space than threshold of its size, or than min_free",
         {"threshold": (fraction, 0.10), "min_free": (size, 10**9)}),
    # 10 GB is about 8 million tasks of history at 1.2 kB each (see
    # docs/retention.md): past it, pages that scan events slow down and
    # ``prune --vacuum`` needs as much free space again.
    Rule("store_size",
         "the event store's files (database and write-ahead log) take more "
         "than threshold",
         {"threshold": (size, 10 * 10**9)}),
)}


def default_rules():
    """{rule name: its parameters} for every rule, at its defaults."""
    return {name: rule.configure({}) for name, rule in RULES.items()}


def load_rules(path=None):
    """{rule name: parameters} of the enabled rules, ``path``'s overrides applied.

    Without a path, every default rule. Raises ValueError (one line) for a
    file that cannot be read or parsed, or that names what no rule has.
    """
    if path is None:
        return default_rules()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise ValueError("a rules file needs Python 3.11 or later (tomllib)")
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ValueError("cannot read rules file %s: %s" % (path, exc.strerror or exc))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError("rules file %s is not valid TOML: %s" % (path, exc))
    return configure(document, where=path)


def configure(document, where="rules"):
    """{rule name: parameters} of the enabled rules, ``document`` applied."""
    rules = {}
    unknown = [name for name in document if name not in RULES]
    if unknown:
        raise ValueError("%s: unknown rule %r (rules: %s)" % (
            where, unknown[0], ", ".join(RULES)))
    for name, rule in RULES.items():
        overrides = document.get(name, {})
        if not isinstance(overrides, dict):
            raise ValueError("%s: %s must be a table ([%s]), not %r" % (
                where, name, name, overrides))
        try:
            if not flag(overrides.get("enabled", True)):
                continue
        except ValueError as exc:
            raise ValueError("%s: rule %s, enabled: %s" % (where, name, exc)) from None
        try:
            rules[name] = rule.configure(overrides)
        except ValueError as exc:
            raise ValueError("%s: %s" % (where, exc)) from None
    return rules
