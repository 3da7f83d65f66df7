"""The ``local`` provider: every node is a raylet process on this machine.

This is Ray's fake multi-node provider, and what the autoscaler's tests and
``AutoscalingCluster`` use: nodes join the head's GCS over TCP on 127.0.0.1,
exactly as separate machines would, with each type's resources. They share the
head's session directory (one place for logs and sockets, as in
``cluster_utils.Cluster``) and die with the monitor that started them
(parent-death signal): a monitor killed with SIGKILL leaves no node behind.

``provider.object_store_memory`` (bytes, default 128 MiB) sizes each node's
store unless its type says ``object_store_memory``: the default of 30% of RAM
per node would over-commit the machine as soon as a few nodes run.
"""
from __future__ import annotations

import uuid

from ... import node as node_mod
from ..config import NodeTypeConfig
from ..node_status import NodeStatus
from .base import NodeProvider, ProviderNode, node_labels, split_resources

DEFAULT_OBJECT_STORE_MEMORY = 128 * 1024 * 1024


class LocalNodeProvider(NodeProvider):
    def __init__(self, provider_config: dict, gcs_address: str, session_dir: str):
        self._gcs_address = gcs_address
        self._session_dir = session_dir
        self._store_memory = int(provider_config.get("object_store_memory",
                                                     DEFAULT_OBJECT_STORE_MEMORY))
        self._nodes: dict[str, tuple[str, node_mod.NodeProcesses | None, str]] = {}

    def create_node(self, node_type: NodeTypeConfig, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            node_id = f"local-{uuid.uuid4().hex[:12]}"
            args = split_resources(node_type.resources)
            args["object_store_memory"] = args["object_store_memory"] or self._store_memory
            try:
                processes = node_mod.start_worker_node(
                    gcs_address=self._gcs_address, labels=node_labels(node_type, node_id),
                    detached=False, session_dir=self._session_dir, **args)
            except (ValueError, OSError) as exc:
                self._nodes[node_id] = (node_type.name, None, f"could not start: {exc}")
            else:
                self._nodes[node_id] = (node_type.name, processes, "")
            ids.append(node_id)
        return ids

    def terminate_node(self, node_id: str) -> None:
        entry = self._nodes.pop(node_id, None)
        if entry is not None and entry[1] is not None:
            entry[1].stop()

    def non_terminated_nodes(self) -> list[ProviderNode]:
        found = []
        for node_id, (node_type, processes, error) in self._nodes.items():
            if processes is None:
                found.append(ProviderNode(node_id, node_type, NodeStatus.FAILED, error))
                continue
            codes = [p.poll() for p in processes.processes]
            if any(code is not None for code in codes):
                found.append(ProviderNode(
                    node_id, node_type, NodeStatus.FAILED,
                    f"its raylet exited with code {codes[0]}; see "
                    f"{self._session_dir}/logs/raylet-{processes.node_id.hex()[:12]}.log"))
            else:
                found.append(ProviderNode(node_id, node_type, NodeStatus.RUNNING))
        return found
