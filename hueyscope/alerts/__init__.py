"""Alerts: rules over the event store and the queue that say something is wrong.

- :mod:`hueyscope.alerts.rules`: the default rules, their thresholds, and
  how ``rules.toml`` overrides them;
- :mod:`hueyscope.alerts.checks`: what each rule measures, as one
  :class:`~hueyscope.alerts.checks.Finding` per rule, fired or quiet;
- :mod:`hueyscope.alerts.notify`: sending firing alerts through apprise;
- :mod:`hueyscope.alerts.loop`: checks inside a consumer, recorded in the
  ``alerts`` table of the event store;
- :mod:`hueyscope.alerts.command`: ``hueyscope check``.
"""
