"""The ``command`` provider: nodes made and removed by shell commands you configure.

For machines that exist already (ssh into a host from a list and run
``ember start --address ...`` there) or a cloud's command line tool::

    provider:
      type: command
      hosts: [10.0.0.5, 10.0.0.6]          # optional: one node per host
      create_command: >-
        ssh {host} ember start --address {gcs_address} --num-cpus {num_cpus}
        --num-gpus {num_gpus} --resources {resources_json} --labels {labels_json}
      terminate_command: ssh {host} ember stop

Placeholders: ``{gcs_address}``, ``{node_type}``, ``{provider_node_id}``,
``{num_cpus}``, ``{num_gpus}``, ``{resources_json}`` (custom resources) and
``{labels_json}`` (already shell-quoted), and ``{host}`` when ``hosts`` is
set. The labels must reach the node (``--labels``): they are how the
autoscaler recognises it in the cluster. Commands run with the cluster token
in ``EMBER_AUTH_TOKEN``, which ``ember start --address`` reads; a command that
reaches another machine must pass it on (``ssh {host}
EMBER_AUTH_TOKEN=$EMBER_AUTH_TOKEN ember start ...``), and the head must
listen where that machine reaches it (``ember start --head --node-ip-address
IP --autoscaling-config cluster.yaml``).

A create command that exits 0 has done its part (``ember start`` returns once
the node has joined); one that exits otherwise is a failed launch, reported
with the end of its output. Commands run in the background, so a slow ssh
never stalls the autoscaler; their output goes to
``<session>/logs/autoscaler-command-<id>.out``.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid

from ...rpc import auth
from ..config import NodeTypeConfig
from ..node_status import NodeStatus
from .base import NodeProvider, ProviderNode, node_labels, split_resources


class _CommandNode:
    def __init__(self, node_type: str, host: str, log_path: str):
        self.node_type = node_type
        self.host = host
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.error = ""


class CommandNodeProvider(NodeProvider):
    def __init__(self, provider_config: dict, gcs_address: str, session_dir: str):
        # Checked by config.validate_config: both commands are strings, hosts a list.
        hosts = provider_config.get("hosts")
        self._config = provider_config
        self._hosts = hosts
        self._gcs_address = gcs_address
        self._log_dir = os.path.join(session_dir, "logs")
        self._nodes: dict[str, _CommandNode] = {}
        #: Terminate commands still running; reaped as the monitor lists nodes.
        self._terminating: list[subprocess.Popen] = []

    def _free_host(self) -> str | None:
        if self._hosts is None:
            return ""
        used = {n.host for n in self._nodes.values()}
        return next((h for h in self._hosts if h not in used), None)

    def create_node(self, node_type: NodeTypeConfig, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            node_id = f"cmd-{uuid.uuid4().hex[:12]}"
            host = self._free_host()
            node = _CommandNode(node_type.name, host or "",
                                os.path.join(self._log_dir, f"autoscaler-command-{node_id}.out"))
            self._nodes[node_id] = node
            ids.append(node_id)
            if host is None:
                node.error = f"no free host: all of provider.hosts {self._hosts} hold a node"
                continue
            args = split_resources(node_type.resources)
            command = self._config["create_command"].format(
                gcs_address=self._gcs_address, node_type=node_type.name,
                provider_node_id=node_id, host=host, num_cpus=f"{args['num_cpus']:g}",
                num_gpus=f"{args['num_gpus']:g}",
                resources_json=shlex.quote(json.dumps(args["resources"])),
                labels_json=shlex.quote(json.dumps(node_labels(node_type, node_id))))
            node.process = self._run(command, node.log_path)
        return ids

    def _run(self, command: str, log_path: str) -> subprocess.Popen:
        # The cluster token, for `ember start --address` (forward it to a remote host:
        # `ssh {host} EMBER_AUTH_TOKEN=$EMBER_AUTH_TOKEN ember start ...`).
        env = dict(os.environ, **{auth.ENV_TOKEN: auth.current_token().decode()})
        with open(log_path, "ab") as out:
            return subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, close_fds=True, env=env)

    def terminate_node(self, node_id: str) -> None:
        node = self._nodes.pop(node_id, None)
        if node is None:
            return
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()
        command = self._config["terminate_command"].format(
            provider_node_id=node_id, node_type=node.node_type, host=node.host,
            gcs_address=self._gcs_address)
        self._terminating.append(self._run(command, node.log_path))

    def non_terminated_nodes(self) -> list[ProviderNode]:
        self._terminating = [p for p in self._terminating if p.poll() is None]
        found = []
        for node_id, node in self._nodes.items():
            code = None if node.process is None else node.process.poll()
            if node.error or (code is not None and code != 0):
                error = node.error or (f"the create command exited with code {code}: "
                                       f"{_tail(node.log_path)}")
                found.append(ProviderNode(node_id, node.node_type, NodeStatus.FAILED,
                                          error))
            elif code == 0:
                found.append(ProviderNode(node_id, node.node_type, NodeStatus.RUNNING))
            else:
                found.append(ProviderNode(node_id, node.node_type, NodeStatus.LAUNCHING))
        return found

    def shutdown(self) -> None:
        super().shutdown()
        for proc in self._terminating:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._terminating = []


def _tail(path: str, limit: int = 400) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return "(no output)"
    return text[-limit:].strip() or "(no output)"
