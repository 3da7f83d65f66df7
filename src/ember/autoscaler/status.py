"""The autoscaler's section of ``ember status``, in Ray's layout. Pure formatting.

Ray's ``ray status`` shows the autoscaler's nodes by type (active, pending,
recent failures) and the demand the cluster cannot serve yet, one line per
shape with a lower bound on its count ("3+": a raylet reports at most the
lease requests owners have sent, not every queued task). The inputs are
the monitor's last status (from the KV store) and the GCS's demand view.
"""
from __future__ import annotations

import collections
import datetime

from ..protocol import gcs as msg
from .node_status import NodeStatus


def _shape(shape: dict[str, float]) -> str:
    return str({k: float(v) for k, v in sorted(shape.items())})


def format_autoscaler(status: msg.AutoscalerStatus | None,
                      demand: msg.ClusterDemandReply) -> list[str]:
    """The lines of the section; says so when no autoscaler runs."""
    if status is None:
        return ["======== Autoscaler status ========",
                " (no autoscaler: start the head with --autoscaling-config, or `ember up`)"]
    when = datetime.datetime.fromtimestamp(status.time).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"======== Autoscaler status: {when} ({status.cluster_name}) ========",
             "Node status", "-" * 60, "Healthy:"]
    head_types = collections.Counter()
    for info in demand.nodes:
        if info.alive and info.is_head:
            head_types[status.head_node_type] += 1
    states = collections.defaultdict(collections.Counter)
    for node in status.nodes:
        states[NodeStatus(node.status)][node.node_type] += 1
    healthy = states[NodeStatus.RUNNING] + states[NodeStatus.DRAINING]
    rows = [f" {count} {name}" for name, count in sorted((head_types + healthy).items())]
    lines += rows or [" (no healthy nodes)"]
    lines.append("Pending:")
    rows = [f" {name}, {count} {state.value}"
            for state in (NodeStatus.LAUNCHING, NodeStatus.DRAINING)
            for name, count in sorted(states[state].items())]
    lines += rows or [" (no pending nodes)"]
    lines.append("Recent failures:")
    lines += [f" {f.node_type} ({f.provider_node_id}): {f.error}"
              for f in status.failures] or [" (no failures)"]
    lines += ["", "Demands:"]
    lines += format_demand(demand, status.infeasible) or [" (no resource demands)"]
    return lines


def format_demand(demand: msg.ClusterDemandReply,
                  infeasible: list[dict[str, float]] = ()) -> list[str]:
    """Unmet demand as Ray prints it: "{'CPU': 4.0}: 3+ pending tasks"."""
    no_type = {_shape(s) for s in infeasible}
    lines = []
    for d in sorted(demand.tasks, key=lambda d: _shape(d.shape)):
        text = f" {_shape(d.shape)}: {d.count}+ pending tasks"
        if _shape(d.shape) in no_type:
            text += " (no node type can hold it)"
        lines.append(text)
    groups = collections.Counter(
        (" + ".join(_shape(b) for b in g.bundles), g.strategy) for g in demand.placement_groups)
    for (bundles, strategy), count in sorted(groups.items()):
        lines.append(f" {bundles} ({strategy}): {count}+ pending placement groups")
    requested = collections.Counter(_shape(b) for b in demand.requested)
    for shape, count in sorted(requested.items()):
        lines.append(f" {shape} * {count}: from request_resources()")
    return lines
