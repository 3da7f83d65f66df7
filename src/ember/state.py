"""Cluster state as people read it: ``ember status``.

Queries go straight to the GCS, so they work from any machine that can reach
it, with or without a driver.
"""
from __future__ import annotations

import msgspec
import uvloop

from . import rpc
from .autoscaler.status import format_autoscaler
from .observability import cluster
from .protocol import gcs as gcs_msg
from .protocol import raylet as rl


def ask_every_raylet(gcs_address: str, request, timeout: float = 10.0):
    """The GCS's node table, and ``request``'s reply from each live raylet (None if
    it did not answer), as ``(GetAllNodesReply, {node_id: reply})``."""
    return cluster.run(cluster.ask_raylets, gcs_address, request, timeout)


def fetch_cluster(gcs_address: str):
    """Nodes, their availability, and each live raylet's debug state."""
    table, replies = ask_every_raylet(gcs_address, rl.GetNodeState(), timeout=5)
    return table, {node_id: r.state if r is not None else None
                   for node_id, r in replies.items()}


def _fmt_amount(name: str, value: float) -> str:
    if name in ("memory", "object_store_memory"):
        return _fmt_bytes(value)
    return f"{value:g}"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}"


def format_status(gcs_address: str) -> str:
    reply, states = fetch_cluster(gcs_address)
    alive = [n for n in reply.nodes if n.alive]
    dead = [n for n in reply.nodes if not n.alive]
    lines = [f"======== Cluster status: {gcs_address} ========", "Node status",
             "-" * 60, "Active:"]
    for n in alive:
        role = " (head)" if n.is_head else ""
        lines.append(f" node_{n.node_id.hex()[:12]} {n.ip}{role}")
        lines.append(f"  ports: {format_ports(n)}")
    if not alive:
        lines.append(" (no active nodes)")
    lines.append("Dead:")
    for n in dead:
        lines.append(f" node_{n.node_id.hex()[:12]} {n.ip}: {n.death_reason}")
    if not dead:
        lines.append(" (no dead nodes)")
    total: dict[str, float] = {}
    avail: dict[str, float] = {}
    for n in alive:
        for k, v in n.resources_total.items():
            total[k] = total.get(k, 0.0) + v
        for k, v in reply.available.get(n.node_id, n.resources_total).items():
            avail[k] = avail.get(k, 0.0) + v
    lines += ["", "Resources", "-" * 60, "Usage:"]
    for name in sorted(total, key=lambda k: (k.startswith("node:"), k)):
        if name.startswith("node:"):
            continue
        used = total[name] - avail.get(name, 0.0)
        lines.append(f" {_fmt_amount(name, used)}/{_fmt_amount(name, total[name])} {name}")
    lines += ["", "Object store:"]
    for node_id, state in states.items():
        store = (state or {}).get("object_store") or {}
        stats = store.get("stats", store)
        if "capacity" in stats:
            lines.append(
                f" node_{node_id.hex()[:12]}: {_fmt_bytes(stats.get('used', 0))} used of "
                f"{_fmt_bytes(stats['capacity'])}, {stats.get('num_objects', 0)} objects, "
                f"{_fmt_bytes(stats.get('spilled_bytes', 0))} spilled to disk")
    metrics = [f" node_{n.node_id.hex()[:12]}: http://{address}/metrics" for n in alive
               if (address := _metrics_address(n))]
    if metrics:
        lines += ["", "Metrics (Prometheus):"] + metrics
    lines += ["", "Demands:"]
    demands = []
    for node_id, state in states.items():
        if state:
            demands += [f" {d}: infeasible" for d in state.get("infeasible", [])]
            for desc, count in state.get("leases", {}).get("queued_by_key", {}).items():
                demands.append(f" {desc}: {count} pending")
    lines += demands or [" (no resource demands)"]
    lines += [""] + format_autoscaler(*fetch_autoscaler(gcs_address))
    return "\n".join(lines)


def format_ports(node) -> str:
    """A node's ports as ``ember status`` shows them: what a firewall must let through."""
    parts = [("gcs", node.gcs_port), ("node manager", node.raylet.port),
             ("object manager", node.raylet.port), ("metrics", node.metrics_export_port),
             ("dashboard", node.dashboard_port)]
    shown = [f"{name} {port}" for name, port in parts if port]
    shown.append(f"workers {node.worker_ports or 'any'}")
    return ", ".join(shown)


def fetch_autoscaler(gcs_address: str):
    """The monitor's last status (None if no autoscaler runs) and the GCS's demand view."""
    async def query():
        conn = await rpc.connect(gcs_address, name="gcs", timeout=5)
        try:
            raw = (await conn.call(gcs_msg.KVGet(gcs_msg.AUTOSCALER_KV_NAMESPACE,
                                                 gcs_msg.AUTOSCALER_STATUS_KEY),
                                   timeout=10)).value
            demand = await conn.call(gcs_msg.GetClusterDemand(), timeout=10)
        finally:
            conn.close()
        status = msgspec.msgpack.decode(raw, type=gcs_msg.AutoscalerStatus) if raw else None
        return status, demand
    return uvloop.run(query())


def _metrics_address(node) -> str:
    """The node's metrics endpoint, as its raylet wrote it to the session directory."""
    from .observability.metrics import port_file
    try:
        with open(port_file(node.session_dir, node.node_id)) as f:
            return f.read().strip()
    except OSError:
        return ""


def fetch_memory(gcs_address: str):
    """Per live node: (NodeInfo, GetMemoryInfoReply or None)."""
    table, replies = ask_every_raylet(gcs_address, rl.GetMemoryInfo(), timeout=15)
    return [(info, replies[info.node_id]) for info in table.nodes if info.alive]


def format_memory(gcs_address: str) -> str:
    """``ember memory``: every reference in the cluster, then each node's store."""
    nodes = fetch_memory(gcs_address)
    pids = {}
    for _, reply in nodes:
        for worker in (reply.workers if reply else []):
            pids[worker.worker_id] = (worker.pid, worker.is_driver)
    # What the stores hold: a borrower that has not read an object yet knows
    # neither its size nor where it is, but the store of its node does.
    stored = {oid: (size, is_spilled) for _, reply in nodes if reply
              for oid, size, _, _, is_spilled in reply.stored}
    header = f"{'Object ID':58} {'Reference Type':20} {'Size':>10} {'Owner':>14} {'Where':9} " \
             "Call Site"
    lines = ["======== Object references ========", header]
    count = 0
    for info, reply in nodes:
        if reply is None:
            lines.append(f"(node {info.node_id.hex()[:12]} at {info.ip} did not answer)")
            continue
        for worker in reply.workers:
            holder = f"{'driver' if worker.is_driver else 'worker'} pid={worker.pid}"
            lines.append(f"--- {holder} ({info.ip}) ---")
            for ref in worker.references:
                owner_pid = pids.get(ref.owner_worker_id, (None, False))[0]
                owner = f"pid={owner_pid}" if owner_pid else ref.owner_worker_id.hex()[:8]
                in_store = stored.get(ref.object_id)
                where = ("spilled" if in_store and in_store[1] else
                         "store" if ref.in_store or in_store else "inline")
                size = ref.size if ref.size >= 0 or not in_store else in_store[0]
                size = _fmt_bytes(size) if size >= 0 else "?"
                lines.append(f"{ref.object_id.hex():58} {ref.ref_type:20} {size:>10} "
                             f"{owner:>14} {where:9} {ref.call_site or '-'}")
                count += 1
    lines += [f"({count} references)", "", "======== Object store per node ========"]
    for info, reply in nodes:
        if reply is None:
            continue
        st = reply.store_stats
        lines.append(
            f"node_{info.node_id.hex()[:12]} ({info.ip}): {_fmt_bytes(st.get('used', 0))} "
            f"used of {_fmt_bytes(st.get('capacity', 0))} ({st.get('num_objects', 0)} objects,"
            f" {_fmt_bytes(st.get('pinned', 0))} pinned); spilled "
            f"{st.get('num_spilled', 0)} objects, {_fmt_bytes(st.get('spilled_bytes', 0))}; "
            f"restored {st.get('restored', 0)}, evicted {st.get('evicted', 0)}")
    return "\n".join(lines)
