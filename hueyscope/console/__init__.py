"""The hueyscope console: the queue live in Datasette, with actions for operators.

:mod:`hueyscope.console.plugin` is the Datasette plugin (pages, JSON API,
the ``hueyscope-operate`` permission); :mod:`~hueyscope.console.live` reads
the queue now, :mod:`~hueyscope.console.history` reads one task's record
from the event store, and :mod:`~hueyscope.console.core` holds the open
queue and runs the actions through :mod:`hueyscope.queue.operations`.
"""
