"""Cluster views built by hand, for the scheduling-policy tests (no processes)."""
import random

from ember.raylet.cluster_view import ClusterView, NodeView
from ember.raylet.resources import NodeResources, fixed_request

THRESHOLD = 0.5


def node_id(i: int) -> bytes:
    return bytes([i]) * 28


def make_view(*cpus: float, seed: int = 0, labels=None) -> ClusterView:
    """Node 0 is the local node; node i has cpus[i] CPUs, all free."""
    view = ClusterView(node_id(0), rng=random.Random(seed), spread_threshold=THRESHOLD)
    for i, n in enumerate(cpus):
        view.nodes[node_id(i)] = NodeView(node_id(i), NodeResources({"CPU": n}),
                                          (labels or {}).get(i, {}))
    return view


def cpu(n: float) -> dict[str, int]:
    return fixed_request({"CPU": n})


def busy(view: ClusterView, i: int, n: float) -> None:
    assert view.nodes[node_id(i)].resources.allocate(cpu(n)) is not None
