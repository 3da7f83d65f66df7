"""The node provider interface: the autoscaler's only way to make or remove a node.

Five operations, as in Ray's NodeProvider, cut to what the monitor uses:
``create_node``, ``terminate_node``, ``non_terminated_nodes``, ``node_tags``
and ``node_status``. A provider knows nothing of demand or of the GCS; the
monitor matches a provider's node to the GCS's by the labels the provider
gives the raylet it starts (``ember.io/provider-node-id``), which every
provider must pass on.

Creation is asynchronous everywhere: ``create_node`` returns ids at once and
``node_status`` says later whether the node came up (LAUNCHING, RUNNING) or
not (FAILED, with the reason). The monitor's loop therefore never waits on a
slow cloud call or an ssh session.
"""
from __future__ import annotations

import abc
import dataclasses

from ..config import NodeTypeConfig
from ..node_status import NodeStatus

#: Labels every provider puts on the raylets it starts.
LABEL_NODE_TYPE = "ember.io/node-type"
LABEL_PROVIDER_NODE_ID = "ember.io/provider-node-id"


@dataclasses.dataclass
class ProviderNode:
    id: str
    node_type: str
    #: LAUNCHING, RUNNING or FAILED.
    status: NodeStatus
    error: str = ""


def node_labels(node_type: NodeTypeConfig, provider_node_id: str) -> dict[str, str]:
    """The labels a provider gives the raylet of a new node."""
    return {**node_type.labels, LABEL_NODE_TYPE: node_type.name,
            LABEL_PROVIDER_NODE_ID: provider_node_id}


class NodeProvider(abc.ABC):
    """Makes and removes nodes of the config's types. Driven from one thread."""

    @abc.abstractmethod
    def create_node(self, node_type: NodeTypeConfig, count: int) -> list[str]:
        """Start ``count`` nodes of ``node_type``; their provider ids, at once."""

    @abc.abstractmethod
    def terminate_node(self, node_id: str) -> None:
        """Stop the node (its raylet leaves the cluster); forget it."""

    @abc.abstractmethod
    def non_terminated_nodes(self) -> list[ProviderNode]:
        """Every node created and not terminated, with its current status."""

    def node_tags(self, node_id: str) -> dict[str, str]:
        node = next((n for n in self.non_terminated_nodes() if n.id == node_id), None)
        return {} if node is None else {LABEL_NODE_TYPE: node.node_type,
                                        LABEL_PROVIDER_NODE_ID: node.id}

    def node_status(self, node_id: str) -> NodeStatus | None:
        node = next((n for n in self.non_terminated_nodes() if n.id == node_id), None)
        return None if node is None else node.status

    def shutdown(self) -> None:
        """Terminate every node this provider made (the monitor is stopping)."""
        for node in self.non_terminated_nodes():
            self.terminate_node(node.id)


def split_resources(resources: dict[str, float]) -> dict:
    """A type's resources as the arguments of a node start (num_cpus, resources, ...).

    Missing CPU and GPU mean none, not "detect": a node type says what it offers.
    """
    custom = {k: v for k, v in resources.items()
              if k not in ("CPU", "GPU", "memory", "object_store_memory")}
    return {"num_cpus": resources.get("CPU", 0.0), "num_gpus": resources.get("GPU", 0.0),
            "memory": int(resources["memory"]) if "memory" in resources else None,
            "object_store_memory": (int(resources["object_store_memory"])
                                    if "object_store_memory" in resources else None),
            "resources": custom}
