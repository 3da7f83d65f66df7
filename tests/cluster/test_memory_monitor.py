"""The memory monitor end to end: a cluster inside a memory cgroup made by the test.

The head (GCS, raylet, and so the workers) is started by ``ember start`` in
a memory cgroup with a limit, so that "the node runs out of memory" happens
at a few hundred MiB rather than at the machine's size. A task that keeps
allocating must end in ``OutOfMemoryError`` naming it, the node, the memory
and the threshold, with the GCS and raylet alive and running tasks after.

cgroup v2 is used when its memory controller can be delegated to a child;
otherwise the v1 memory controller (this is what some sandboxes offer). The
monitor's threshold is lowered (0.6) and its period shortened (50 ms) so that
it acts well before the kernel's limit, whatever the allocation speed.

If neither is writable (not root, no cgroupfs), or ``EMBER_TEST_NO_CGROUP=1``,
the cluster runs without a cgroup and the threshold is set 384 MiB above the
node's memory use at the start of the test (less reliable on a busy machine:
another process's memory counts too).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

import ember as ray
import ember.node
from ember.config import config
from ember.exceptions import OutOfMemoryError
from helpers import ember_processes, wait_for_condition, wait_no_ember_processes

MiB = 1024 * 1024
LIMIT = 768 * MiB
THRESHOLD = 0.6


def _v2_parent() -> str | None:
    for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        try:
            with open(os.path.join(mount, "cgroup.subtree_control")) as f:
                if "memory" in f.read().split():
                    return mount
        except OSError:
            continue
    return None


class CgroupUnavailable(Exception):
    pass


class MemoryCgroup:
    """A child memory cgroup with a limit; removed (after its processes) on close."""

    threshold = THRESHOLD

    def __init__(self, limit: int):
        name = f"ember-test-{os.getpid()}"
        parent = _v2_parent()
        if os.environ.get("EMBER_TEST_NO_CGROUP") == "1":
            raise CgroupUnavailable("EMBER_TEST_NO_CGROUP=1")
        if parent is not None:
            self.path = os.path.join(parent, name)
            limit_file = "memory.max"
        elif os.path.isdir("/sys/fs/cgroup/memory"):
            self.path = os.path.join("/sys/fs/cgroup/memory", name)
            limit_file = "memory.limit_in_bytes"
        else:
            raise CgroupUnavailable("no cgroup memory controller (neither v2 nor v1)")
        try:
            os.mkdir(self.path)
            with open(os.path.join(self.path, limit_file), "w") as f:
                f.write(str(limit))
        except OSError as exc:
            try:
                os.rmdir(self.path)
            except OSError:
                pass
            raise CgroupUnavailable(f"cannot make a memory cgroup at {self.path}: {exc}")
        self.where = f"the cgroup {self.path}"

    def enter(self) -> None:
        """Move the calling process into the cgroup (for a child's preexec_fn)."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except OSError:
            return []

    def close(self) -> None:
        wait_for_condition(lambda: not self.pids(), timeout=15,
                           message=f"the processes of {self.path} to exit")
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass


def ember_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


class NodeThreshold:
    """No cgroup: the node's memory, with a threshold 384 MiB above its use now."""

    where = "the node"

    def __init__(self, reason: str):
        vm = psutil.virtual_memory()
        self.threshold = round((vm.total - vm.available + 384 * MiB) / vm.total, 3)
        print(f"memory monitor tests without a cgroup ({reason}): threshold "
              f"{self.threshold} of the node's memory")

    def enter(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def head_in_cgroup(temp_root):
    """A head node of 2 CPUs inside a 768 MiB memory cgroup (or with a lowered
    threshold, see the module docstring); yields the cgroup."""
    try:
        cgroup = MemoryCgroup(LIMIT)
    except CgroupUnavailable as exc:
        cgroup = NodeThreshold(str(exc))
    env = dict(os.environ, EMBER_MEMORY_USAGE_THRESHOLD=str(cgroup.threshold),
               EMBER_MEMORY_MONITOR_REFRESH_MS="50")
    try:
        started = ember_cli("start", "--head", "--port", str(ember.node.free_port()),
                            "--num-cpus", "2", "--object-store-memory", str(64 * MiB),
                            env=env, preexec_fn=cgroup.enter)
        assert started.returncode == 0, started.stdout + started.stderr
        ray.init(address="auto")
        yield cgroup
    finally:
        ray.shutdown()
        ember_cli("stop")
        wait_no_ember_processes(temp_root)
        cgroup.close()


def system_processes(temp_root) -> list[psutil.Process]:
    return [p for p in ember_processes(temp_root)
            if any(m in p.cmdline() for m in ("ember.gcs", "ember.raylet"))]


@ray.remote
def allocate_until_killed(chunk_mib: int = 4, most_mib: int = 4096):
    """Grow by ``chunk_mib`` MiB every 10 ms until killed (or ``most_mib`` is reached)."""
    held = []
    while len(held) * chunk_mib < most_mib:
        held.append(b"\x01" * (chunk_mib * MiB))
        time.sleep(0.01)
    return "the memory monitor did not stop the task"


@ray.remote
def hold(mib: int, release_path: str):
    held = b"\x02" * (mib * MiB)
    open(release_path + ".started", "w").close()
    while not os.path.exists(release_path):
        time.sleep(0.01)
    return len(held)


@ray.remote
def attempt(path: str):
    with open(path, "a") as f:
        f.write("x\n")
    held = []
    while len(held) < 1024:
        held.append(b"\x01" * (4 * MiB))
        time.sleep(0.01)


def test_task_that_fills_the_memory_gets_out_of_memory_error(head_in_cgroup, temp_root):
    system = system_processes(temp_root)
    assert len(system) == 2
    for proc in system:  # the kernel's OOM killer would take a worker first
        assert int(open(f"/proc/{proc.pid}/oom_score_adj").read()) < 1000
    with pytest.raises(OutOfMemoryError) as info:
        ray.get(allocate_until_killed.remote(), timeout=120)
    text = str(info.value)
    node = ray.nodes()[0]
    assert "The task " in text and "allocate_until_killed was killed" in text
    assert node["NodeManagerAddress"] in text and node["NodeID"][:12] in text
    assert f"threshold of {head_in_cgroup.threshold:.2f}" in text
    assert "GiB /" in text and head_in_cgroup.where in text
    for advice in ("num_cpus", "memory=", "EMBER_MEMORY_USAGE_THRESHOLD"):
        assert advice in text
    # The GCS and the raylet survived, and the cluster still runs tasks.
    assert all(p.is_running() for p in system)

    @ray.remote
    def ok():
        return int(open("/proc/self/oom_score_adj").read())
    assert ray.get(ok.remote(), timeout=60) == 1000  # workers go first in a real OOM


def test_killed_task_is_retried_without_spending_max_retries(head_in_cgroup, tmp_path,
                                                               monkeypatch):
    # A task that shares its owner's group with another running task is retried
    # (the other may be what fills the memory), after a backoff, on the OOM
    # budget: with max_retries=1 and 2 OOM retries it runs 3 times.
    monkeypatch.setattr(config, "task_oom_retries", 2)
    monkeypatch.setattr(config, "task_oom_retry_delay_base_ms", 50)
    release = tmp_path / "release"
    attempts = tmp_path / "attempts"
    holder = hold.remote(64, str(release))
    wait_for_condition(lambda: os.path.exists(f"{release}.started"), timeout=60)
    with pytest.raises(OutOfMemoryError, match="attempt"):
        ray.get(attempt.options(max_retries=1).remote(str(attempts)), timeout=120)
    assert attempts.read_text().count("x") == 3
    release.write_text("")
    assert ray.get(holder, timeout=60) == 64 * MiB  # the older task was spared


@ray.remote
class Hog:
    def grow(self):
        held = []
        while len(held) < 1024:
            held.append(b"\x01" * (4 * MiB))
            time.sleep(0.01)


def test_actor_that_fills_the_memory_dies_saying_why(head_in_cgroup):
    from ember.exceptions import ActorDiedError
    hog = Hog.remote()
    with pytest.raises(ActorDiedError) as info:
        ray.get(hog.grow.remote(), timeout=120)
    text = str(info.value)
    assert "Hog" in text and "ran low on memory" in text
    assert f"threshold of {head_in_cgroup.threshold:.2f}" in text
    assert "EMBER_MEMORY_USAGE_THRESHOLD" in text
