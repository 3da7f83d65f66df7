"""`ember up` / `ember down`, `ember start --autoscaling-config`, and the command provider.

Each cluster here is started from a YAML file by the command line, as a user
would, and its worker nodes by the autoscaler; `ember down` leaves no process.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import ember
from ember import node as node_mod
from ember.rpc import auth
from ember.state import format_status
from helpers import ember_processes, wait_for_condition, wait_no_ember_processes


def ember_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def write_config(path, provider, name="cli-test", **cpu1):
    config = {"cluster_name": name, "max_workers": 2, "idle_timeout_minutes": 0.05,
              "provider": provider, "head_node_type": "head",
              "available_node_types": {
                  "head": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
                  "cpu1": {"resources": {"CPU": 1, "cli_worker": 1}, "node_config": {},
                           "min_workers": 1, "max_workers": 2, **cpu1}}}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def current_cluster() -> str:
    """The address `ember up` / `ember start` recorded; this process takes its token."""
    address = node_mod.read_current_cluster()
    auth.set_token(node_mod.find_token(address))
    return address


def workers_alive(address: str) -> list:
    reply = node_mod.query_nodes(address)
    return [n for n in reply.nodes if n.alive and "ember.io/node-type" in n.labels]


def up_and_down(config_path: str, temp_root):
    started = ember_cli("up", config_path)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        address = current_cluster()
        assert "is up: head at" in started.stdout
        again = ember_cli("up", config_path)
        assert again.returncode != 0 and "is already up" in again.stderr
        wait_for_condition(lambda: len(workers_alive(address)) == 1, 60, interval=0.2,
                           message="the min_workers node")
        wait_for_condition(lambda: "Healthy:\n 1 cpu1\n 1 head" in format_status(address),
                           30, interval=0.2, message="the node in ember status")
        status = ember_cli("status")
        assert status.returncode == 0 and "======== Autoscaler status:" in status.stdout
        assert "(cli-test)" in status.stdout
    finally:
        stopped = ember_cli("down", config_path, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "is down" in stopped.stdout
    wait_no_ember_processes(temp_root)
    assert "is not up" in ember_cli("down", config_path).stdout


def test_up_and_down_with_the_local_provider(tmp_path, temp_root):
    ember.shutdown()
    up_and_down(write_config(tmp_path / "local.yaml", {"type": "local"}), temp_root)


def test_up_and_down_with_the_command_provider(tmp_path, temp_root):
    ember.shutdown()
    python = sys.executable
    provider = {
        "type": "command",
        "create_command": f"{python} -m ember.cli start --address {{gcs_address}} "
                          "--num-cpus {num_cpus} --resources {resources_json} "
                          "--labels {labels_json} --object-store-memory 100000000",
        "terminate_command": f"{python} -m ember.autoscaler.launcher {{provider_node_id}}",
    }
    up_and_down(write_config(tmp_path / "command.yaml", provider), temp_root)


def test_a_failing_create_command_is_reported_in_status(tmp_path, temp_root):
    ember.shutdown()
    provider = {"type": "command", "create_command": "echo no cloud here; exit 3",
                "terminate_command": "true", "launch_backoff_s": 60}
    path = write_config(tmp_path / "failing.yaml", provider, name="failing")
    started = ember_cli("up", path)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        address = current_cluster()
        wait_for_condition(
            lambda: "the create command exited with code 3: no cloud here"
                    in format_status(address), 30, interval=0.2,
            message="the failed launch in ember status")
        assert "Recent failures:\n cpu1 (cmd-" in format_status(address)
    finally:
        assert ember_cli("down", path, timeout=120).returncode == 0
    wait_no_ember_processes(temp_root)


def test_start_head_with_an_autoscaling_config(tmp_path, temp_root):
    ember.shutdown()
    path = write_config(tmp_path / "start.yaml", {"type": "local"})
    port = node_mod.free_port()
    started = ember_cli("start", "--head", "--port", str(port), "--num-cpus", "1",
                        "--autoscaling-config", path)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        address = current_cluster()
        wait_for_condition(lambda: len(workers_alive(address)) == 1, 60, interval=0.2,
                           message="the min_workers node")
    finally:
        assert ember_cli("stop").returncode == 0
    wait_no_ember_processes(temp_root)


@pytest.mark.parametrize("config, message", [
    ({"provider": {"type": "aws"}}, "provider.type 'aws' is not a known node provider"),
    ({"available_node_types": {"head": {"resources": {"CPU": 1}},
                               "empty": {"resources": {}}}},
     "available_node_types.empty.resources is empty"),
    ({"available_node_types": {"head": {"resources": {"CPU": 1}},
                               "w": {"resources": {"CPU": 1}, "min_workers": 2,
                                     "max_workers": 1}}},
     "available_node_types.w.max_workers (1) is lower than"),
])
def test_bad_configs_are_refused_naming_the_field(tmp_path, temp_root, config, message):
    raw = {"provider": {"type": "local"}, "head_node_type": "head",
           "available_node_types": {"head": {"resources": {"CPU": 1}}}}
    raw.update(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    for args in (["up", str(path)], ["start", "--head", "--autoscaling-config", str(path)]):
        result = ember_cli(*args)
        assert result.returncode != 0
        assert message in " ".join(result.stderr.split()), result.stderr
    assert not ember_processes(temp_root)
