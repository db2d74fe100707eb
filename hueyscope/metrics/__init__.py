"""Prometheus / OpenMetrics metrics of the event store and the queue's tables.

- :mod:`hueyscope.metrics.store` computes task outcomes, run time and queue
  wait histograms, queue depth, consumers alive and recorder losses from the
  event store, in SQL, each time metrics are read;
- :mod:`hueyscope.metrics.queue_tables` reads leases held and the failed set
  from a SQLite or PostgreSQL queue;
- :mod:`hueyscope.metrics.command` is ``hueyscope metrics``: an HTTP
  ``/metrics`` endpoint, or a file for node_exporter's textfile collector.

``grafana-dashboard.json`` beside this file is a Grafana dashboard of them.
"""
