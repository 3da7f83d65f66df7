"""Starting and stopping a whole cluster from its config: ``ember up`` / ``ember down``,
``ember start --head --autoscaling-config`` and ``AutoscalingCluster``.

A cluster from a config is a head node (GCS and raylet, with the head type's
resources) plus the autoscaler process, which launches the worker nodes: its
``min_workers`` at once, the rest on demand. ``ember up`` records the
session of each cluster name in the temp dir, so that ``ember down`` with the
same file stops that cluster, and only it: the monitor first (it terminates
the nodes it launched, running the ``command`` provider's terminate
command), then the head.
"""
from __future__ import annotations

import os
import signal
import sys

import psutil

from .. import node as node_mod
from ..config import config as ember_config
from .config import AutoscalerConfig, dump_config
from .providers.base import split_resources

#: The autoscaler's copy of the config, in the head's session directory.
CONFIG_FILE = "autoscaling_config.yaml"


def head_settings(head_resources: dict[str, float]) -> dict:
    """start_head() arguments for a head type's resources; a missing CPU or GPU is
    detected, as ``ember start`` does."""
    settings = split_resources(head_resources)
    for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        if name not in head_resources:
            settings[key] = None
    return settings


def start_with_autoscaler(config: AutoscalerConfig, *, detached: bool,
                          head_args: dict | None = None) -> node_mod.NodeProcesses:
    """Start a head and its autoscaler; return once the head has joined its GCS.

    ``head_args`` (start_head arguments) override the head type's resources,
    as ``ember start --head --num-cpus ...`` does.
    """
    settings = head_settings(config.node_types[config.head_node_type].resources)
    settings.update(head_args or {})
    processes = node_mod.start_head(detached=detached, **settings)
    if not node_mod.wait_for_registration(processes.gcs_address, processes.node_id):
        processes.stop()
        raise RuntimeError("The head node did not come up; see the logs in "
                           f"{processes.session_dir}/logs."
                           + node_mod.gcs_startup_error(processes.session_dir))
    start_monitor(processes, config, detached)
    return processes


def start_monitor(processes: node_mod.NodeProcesses, config: AutoscalerConfig,
                  detached: bool) -> None:
    """Start the autoscaler of a running head, with its own copy of the config."""
    import yaml  # 25 ms: imported when used, not by `import ember`
    path = os.path.join(processes.session_dir, CONFIG_FILE)
    with open(path, "w") as f:
        yaml.safe_dump(dump_config(config), f, sort_keys=False)
    monitor = node_mod.start_monitor(processes.session_dir, processes.gcs_address, path,
                                     detached)
    # First in the list: stopped first, so that it removes its nodes while the GCS is up.
    processes.processes.insert(0, monitor)


def _record_path(cluster_name: str) -> str:
    return os.path.join(ember_config.temp_dir, f"ember_up_{cluster_name}")


def up(config: AutoscalerConfig) -> node_mod.NodeProcesses:
    """``ember up``: a detached head and autoscaler for ``config``."""
    if read_record(config.cluster_name) is not None:
        raise RuntimeError(f"Cluster {config.cluster_name!r} is already up; run `ember down` "
                           "with its config first.")
    processes = start_with_autoscaler(config, detached=True)
    node_mod.write_current_cluster(processes.gcs_address, processes.session_dir)
    with open(_record_path(config.cluster_name), "w") as f:
        f.write(f"{processes.session_dir}\n{processes.gcs_address}\n")
    return processes


def read_record(cluster_name: str) -> tuple[str, str] | None:
    """(session dir, GCS address) of the cluster ``ember up`` started, if it runs."""
    try:
        with open(_record_path(cluster_name)) as f:
            session_dir, gcs_address = f.read().split()
    except (FileNotFoundError, ValueError):
        return None
    return session_dir, gcs_address


def down(config: AutoscalerConfig, grace_period: float = 30.0) -> int:
    """``ember down``: stop the cluster ``ember up`` started for ``config``; the number of
    processes stopped (0 if it was not up)."""
    record = read_record(config.cluster_name)
    if record is None:
        return 0
    session_dir, gcs_address = record
    procs = node_mod.find_ember_processes(session_dir)
    monitors = [p for p in procs if "ember.autoscaler.monitor" in " ".join(p.cmdline())]
    for group in (monitors, [p for p in procs if p not in monitors]):
        for proc in group:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(group, timeout=grace_period)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=5)
    # Nodes of the command provider run elsewhere (or detached): sweep what is left.
    rest = node_mod.find_ember_processes(session_dir)
    for proc in rest:
        proc.kill()
    psutil.wait_procs(rest, timeout=5)
    node_mod.remove_spill_files(session_dir)
    os.unlink(_record_path(config.cluster_name))
    if node_mod.read_current_cluster() == gcs_address:
        node_mod.clear_current_cluster()
    return len(procs)


def stop_labelled_node(provider_node_id: str, grace_period: float = 10.0) -> int:
    """Stop the raylet(s) on this machine that carry ``provider_node_id`` in their labels.

    For the ``command`` provider when one machine runs several nodes (and for its
    tests): ``terminate_command: python -m ember.autoscaler.launcher {provider_node_id}``.
    On a machine with one node, ``ember stop`` does the same.
    """
    found = []
    for proc in node_mod.find_ember_processes():
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if "ember.raylet" in cmdline and "--labels" in cmdline and \
                provider_node_id in cmdline[cmdline.index("--labels") + 1]:
            found.append(proc)
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(found, timeout=grace_period)
    for proc in alive:
        proc.kill()
    return len(found)


if __name__ == "__main__":
    stop_labelled_node(sys.argv[1])
