"""Cluster state as people read it: ``ember status``.

Queries go straight to the GCS, so they work from any machine that can reach
it, with or without a driver.
"""
from __future__ import annotations

import uvloop

from . import rpc
from .protocol import gcs as gcs_msg
from .protocol import raylet as rl


def fetch_cluster(gcs_address: str):
    """Nodes, their availability, and each live raylet's debug state."""
    async def query():
        conn = await rpc.connect(gcs_address, name="gcs", timeout=5)
        try:
            reply = await conn.call(gcs_msg.GetAllNodes(), timeout=10)
            states = {}
            for info in reply.nodes:
                if not info.alive:
                    continue
                try:
                    raylet = await rpc.connect(f"{info.raylet.ip}:{info.raylet.port}",
                                               name="raylet", timeout=2)
                    states[info.node_id] = (await raylet.call(rl.GetNodeState(),
                                                              timeout=5)).state
                    raylet.close()
                except (ConnectionError, OSError, rpc.RemoteError):
                    states[info.node_id] = None
            return reply, states
        finally:
            conn.close()
    return uvloop.run(query())


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
    lines += ["", "Demands:"]
    demands = []
    for node_id, state in states.items():
        if state:
            demands += [f" {d}: infeasible" for d in state.get("infeasible", [])]
            for desc, count in state.get("leases", {}).get("queued_by_key", {}).items():
                demands.append(f" {desc}: {count} pending")
    lines += demands or [" (no resource demands)"]
    return "\n".join(lines)
