"""``ember timeline``: task events as a Chrome trace (the JSON Perfetto and chrome://tracing load).

One complete event (``"ph": "X"``) per task attempt that ran, from its
executor's RUNNING to its FINISHED or FAILED time, on a row per worker
(``pid`` = node, ``tid`` = worker pid), as Ray's timeline lays them out. The
spans come from the same task-event store as ``ember list tasks``.
"""
from __future__ import annotations

import json

from ..protocol import task_events as te
from .cluster import fetch_task_events


def chrome_trace(records) -> list[dict]:
    """Trace events for every attempt in ``records`` (TaskEventRecords) that ran."""
    events = []
    named_rows = set()
    for rec in records:
        ts = rec.state_ts
        start = ts[te.RUNNING]
        end = ts[te.FINISHED] or ts[te.FAILED]
        if not start or not end or end < start:
            continue
        node = f"node:{rec.node_id.hex()[:12]}" if rec.node_id else "node:?"
        row = f"worker:{rec.worker_pid}"
        if (node, row) not in named_rows:
            named_rows.add((node, row))
            events.append({"name": "thread_name", "ph": "M", "pid": node, "tid": row,
                           "args": {"name": row}})
        info = rec.info
        name = info.name if info is not None else rec.task_id.hex()
        events.append({
            "cat": "task::" + name, "name": name, "ph": "X", "pid": node, "tid": row,
            "ts": start * 1e6, "dur": (end - start) * 1e6,
            "cname": "rail_response" if rec.state == te.FAILED else "generic_work",
            "args": {"task_id": rec.task_id.hex(), "attempt_number": rec.attempt,
                     "func_or_class_name": info.func_or_class_name if info else "",
                     "state": te.STATE_NAMES[rec.state],
                     "worker_id": rec.worker_id.hex(), "job_id": rec.task_id[-4:].hex()},
        })
    return events


def timeline(filename: str | None = None, address=None, timeout: int = 30) -> list[dict]:
    """As ``ray.timeline()``: the cluster's task spans as Chrome trace events, also
    written as JSON to ``filename`` when given."""
    events = chrome_trace(fetch_task_events(address, timeout, te.GetTaskEvents()).tasks)
    if filename is not None:
        with open(filename, "w") as f:
            json.dump(events, f)
    return events
