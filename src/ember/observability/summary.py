"""Summaries of tasks, actors and objects, grouped and counted as ``ray summary`` does.

Each summary has Ray's shape: ``{"cluster": {"summary": {group: {...}}, totals...}}``.
"""
from __future__ import annotations

import collections

from ..protocol import task_events as te


def summarize_task_counts(rows) -> dict:
    """``(func_or_class_name, type, state, attempts)`` rows (counted in the GCS, see
    records.count_task_records), grouped by function as ``ray summary tasks``."""
    groups: dict[str, dict] = {}
    total = actor_tasks = actor_scheduled = 0
    for func, kind, state, n in rows:
        group = groups.get(func)
        if group is None:
            group = groups[func] = {"func_or_class_name": func, "type": te.TYPE_NAMES[kind],
                                    "state_counts": collections.Counter()}
        group["state_counts"][te.STATE_NAMES[state] if state >= 0 else "NIL"] += n
        if kind == te.ACTOR_TASK:
            actor_tasks += n
        elif kind == te.ACTOR_CREATION_TASK:
            actor_scheduled += n
        else:
            total += n
    for group in groups.values():
        group["state_counts"] = dict(group["state_counts"])
    return {"cluster": {"summary": groups, "total_tasks": total,
                        "total_actor_tasks": actor_tasks,
                        "total_actor_scheduled": actor_scheduled, "summary_by": "func_name"}}


def summarize_actors(actors) -> dict:
    groups: dict[str, dict] = {}
    for a in actors:
        group = groups.setdefault(a.class_name, {"class_name": a.class_name,
                                                 "state_counts": collections.Counter()})
        group["state_counts"][a.state] += 1
    for group in groups.values():
        group["state_counts"] = dict(group["state_counts"])
    return {"cluster": {"summary": groups, "total_actors": len(actors),
                        "summary_by": "class"}}


def summarize_objects(objects) -> dict:
    groups: dict[str, dict] = {}
    ids, size_by_id = set(), {}
    for o in objects:
        group = groups.get(o.call_site)
        if group is None:
            group = groups[o.call_site] = {
                "total_objects": 0, "total_size_mb": 0.0, "total_num_workers": 0,
                "total_num_nodes": 0, "task_state_counts": collections.Counter(),
                "ref_type_counts": collections.Counter(), "_ids": set(), "_pids": set(),
                "_ips": set()}
        if o.object_id not in group["_ids"]:
            group["_ids"].add(o.object_id)
            group["total_objects"] += 1
            group["total_size_mb"] += max(o.object_size, 0) / 1024**2
            group["task_state_counts"][o.task_status] += 1
        group["ref_type_counts"][o.reference_type] += 1
        group["_pids"].add((o.ip, o.pid))
        group["_ips"].add(o.ip)
        ids.add(o.object_id)
        size_by_id[o.object_id] = max(o.object_size, 0)
    for group in groups.values():
        group["total_num_workers"] = len(group.pop("_pids"))
        group["total_num_nodes"] = len(group.pop("_ips"))
        group.pop("_ids")
        group["task_state_counts"] = dict(group["task_state_counts"])
        group["ref_type_counts"] = dict(group["ref_type_counts"])
    return {"cluster": {"summary": groups, "total_objects": len(ids),
                        "total_size_mb": sum(size_by_id.values()) / 1024**2,
                        "callsite_enabled": any(o.call_site not in ("", "disabled")
                                                for o in objects),
                        "summary_by": "callsite"}}
