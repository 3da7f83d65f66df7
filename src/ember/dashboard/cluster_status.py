"""``/api/cluster_status``: what ``ember status`` shows, as JSON for the web UI.

Ray's route answers ``{"autoscalingStatus": <the text of ray status> (with
format=1), "autoscalingError": ..., "clusterStatus": {...}}``. The text is
ember's own ``ember status`` (``ember.state.format_status``); the structured
part is built here from the same queries (``ember.state.fetch_cluster``,
``fetch_autoscaler``), so the Overview page and the CLI can never disagree.
Blocking: the route calls :func:`collect` on a thread.
"""
from __future__ import annotations

from .. import state as cluster_state
from ..observability import cluster


def collect(gcs_address: str, formatted: bool = False) -> dict:
    """The route's ``data``: nodes with their usage, the demand, the autoscaler."""
    cluster.resolve_address(gcs_address)  # sets this process's token for the cluster
    table, node_states = cluster_state.fetch_cluster(gcs_address)
    autoscaler, demand = cluster_state.fetch_autoscaler(gcs_address)
    nodes = [_node(info, table.available.get(info.node_id, info.resources_total),
                   node_states.get(info.node_id)) for info in table.nodes]
    usage: dict[str, list[float]] = {}
    for node in nodes:
        if node["state"] != "ALIVE":
            continue
        for name, total in node["resources_total"].items():
            used_total = usage.setdefault(name, [0.0, 0.0])
            used_total[0] += total - node["resources_available"].get(name, 0.0)
            used_total[1] += total
    return {
        "autoscalingStatus": cluster_state.format_status(gcs_address) if formatted else None,
        "autoscalingError": None,
        "clusterStatus": {
            "nodes": nodes,
            #: resource -> [used, total] over the alive nodes (Ray's loadMetricsReport.usage)
            "usage": usage,
            "demands": {
                "tasks": [{"shape": d.shape, "count": d.count, "infeasible": d.infeasible}
                          for d in demand.tasks],
                "placement_groups": [{"placement_group_id": g.placement_group_id.hex(),
                                      "bundles": g.bundles, "strategy": g.strategy}
                                     for g in demand.placement_groups],
                "requested": list(demand.requested),
            },
            "autoscaler": None if autoscaler is None else {
                "time": autoscaler.time, "cluster_name": autoscaler.cluster_name,
                "nodes": [_autoscaler_node(n) for n in autoscaler.nodes],
                "failures": [_autoscaler_node(n) for n in autoscaler.failures],
                "infeasible": list(autoscaler.infeasible),
            },
        },
    }


def _node(info, available: dict, debug_state: dict | None) -> dict:
    store = (debug_state or {}).get("object_store") or {}
    stats = store.get("stats", store)
    return {
        "node_id": info.node_id.hex(), "node_ip": info.ip, "hostname": info.hostname,
        "is_head_node": info.is_head, "state": "ALIVE" if info.alive else "DEAD",
        "draining": info.draining, "death_reason": info.death_reason or None,
        "start_time_ms": int(info.start_time * 1000) if info.start_time else None,
        "resources_total": {k: v for k, v in info.resources_total.items()
                            if not k.startswith("node:")},
        "resources_available": {k: v for k, v in available.items() if not k.startswith("node:")},
        "object_store": {"used": stats.get("used", 0), "capacity": stats.get("capacity", 0),
                         "num_objects": stats.get("num_objects", 0),
                         "spilled_bytes": stats.get("spilled_bytes", 0)}
        if info.alive else None,
    }


def _autoscaler_node(report) -> dict:
    return {"provider_node_id": report.provider_node_id, "node_type": report.node_type,
            "status": report.status, "node_id": report.node_id.hex() or None,
            "error": report.error or None, "time": report.time}
