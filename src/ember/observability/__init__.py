"""Observability: what a user sees of a running cluster, in one home.

- :mod:`.cluster` reaches the cluster (the GCS's tables and task-event store,
  each raylet's state) from any process: a driver, a task, or a shell.
- :mod:`.records` turns those replies into the state API's Ray-shaped records,
  with filters and limits; :mod:`.summary` groups them as ``ray summary`` does.
- :mod:`.timeline` writes task events as a Chrome trace; :mod:`.logs` finds and
  reads the session's log files.
- :mod:`.metrics` is the per-node Prometheus exporter (system and user metrics).

Recording lives where things happen (``core_worker/task_events.py``) and is
stored in one place (``gcs/task_events.py``); the public faces are
``ember.util.state``, ``ember.util.metrics`` and the ``ember`` CLI.
"""
