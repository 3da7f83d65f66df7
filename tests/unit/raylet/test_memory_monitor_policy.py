"""The memory monitor without processes: which worker it kills, and what memory it reads.

The policy is Ray's group-by-owner: retriable tasks first, then other tasks,
then actors; within a tier the largest owner's group, ties to the newest
group; within a group the newest worker. A task is retried only while
others of its group run on.
"""
from __future__ import annotations

import pytest

from ember.raylet import memory_monitor as mm
from ember.raylet.memory_monitor import Candidate, Tier, choose_worker_to_kill


def task(name: str, owner: bytes, started: float, retriable: bool = True) -> Candidate:
    return Candidate(name.encode(), Tier.RETRIABLE_TASK if retriable else Tier.TASK,
                     owner, started, name)


def actor(name: str, started: float) -> Candidate:
    return Candidate(name.encode(), Tier.ACTOR, b"gcs", started, name)


def test_nothing_to_kill():
    assert choose_worker_to_kill([]) is None


def test_newest_retriable_task_goes_first_and_is_retried():
    decision = choose_worker_to_kill([task("a", b"o", 1), task("b", b"o", 3), task("c", b"o", 2)])
    assert decision.victim.description == "b"
    assert decision.retry  # two more of its owner's tasks run on


def test_retriable_tasks_go_before_newer_non_retriable_tasks_and_actors():
    candidates = [actor("actor", 9), task("plain", b"o", 8, retriable=False),
                  task("old-retriable", b"p", 1), task("x", b"p", 0.5)]
    assert choose_worker_to_kill(candidates).victim.description == "old-retriable"


def test_non_retriable_tasks_go_before_actors_and_are_not_retried():
    decision = choose_worker_to_kill([actor("actor", 9), task("t1", b"o", 1, retriable=False),
                                      task("t2", b"p", 2, retriable=False)])
    # Non-retriable tasks of all owners form one group: the newest of them goes.
    assert decision.victim.description == "t2"
    assert not decision.retry


def test_actors_go_last_newest_first():
    decision = choose_worker_to_kill([actor("old", 1), actor("new", 2)])
    assert decision.victim.description == "new"
    assert not decision.retry


def test_largest_owner_group_goes_first():
    # Owner "fan" runs three tasks, owner "one" a single newer one: the fan-out pays.
    candidates = [task("f1", b"fan", 1), task("f2", b"fan", 2), task("f3", b"fan", 3),
                  task("lone", b"one", 10)]
    decision = choose_worker_to_kill(candidates)
    assert decision.victim.description == "f3"
    assert decision.retry


def test_equal_groups_the_one_that_started_last_goes_first():
    candidates = [task("a1", b"a", 1), task("a2", b"a", 5), task("b1", b"b", 2),
                  task("b2", b"b", 3)]
    # Group a started at 1, group b at 2: b is newer, its newest member goes.
    assert choose_worker_to_kill(candidates).victim.description == "b2"


def test_a_task_alone_in_its_group_is_not_retried():
    # Alone, it is what fills the memory: running it again would fill it again.
    decision = choose_worker_to_kill([task("big", b"o", 1), actor("actor", 2)])
    assert decision.victim.description == "big"
    assert not decision.retry


# --- reading memory ---------------------------------------------------------------------


def snapshot_of(tmp_path, proc_cgroup: str, directory: str, files: dict[str, str]):
    """read_memory() of a fake /proc/self/cgroup and cgroupfs under ``tmp_path``."""
    (tmp_path / "proc_cgroup").write_text(proc_cgroup)
    cg = tmp_path / "cg" / directory
    cg.mkdir(parents=True)
    for name, text in files.items():
        (cg / name).write_text(text)
    found = mm.own_memory_cgroup(str(tmp_path / "proc_cgroup"), str(tmp_path / "cg"))
    return mm.read_memory(found), str(cg)


def test_cgroup_v2_is_found_and_read(tmp_path):
    snapshot, cg = snapshot_of(tmp_path, "0::/jobs/mine\n", "jobs/mine", {
        "memory.max": "1000000\n", "memory.current": "900000\n",
        "memory.stat": "anon 800000\ninactive_file 100000\nactive_file 5\n"})
    assert (snapshot.used, snapshot.total) == (800000, 1000000)
    assert snapshot.source == cg
    assert snapshot.fraction == pytest.approx(0.8)


def test_cgroup_v1_memory_controller_is_read(tmp_path):
    snapshot, _ = snapshot_of(tmp_path, "5:devices:/\n4:memory:/box\n0::/\n", "memory/box", {
        "memory.limit_in_bytes": "2000000\n", "memory.usage_in_bytes": "1500000\n",
        "memory.stat": "cache 10\ntotal_inactive_file 500000\n"})
    assert (snapshot.used, snapshot.total) == (1000000, 2000000)


def test_cgroup_without_a_limit_means_the_nodes_memory(tmp_path):
    snapshot, _ = snapshot_of(tmp_path, "0::/free\n", "free", {
        "memory.max": "max\n", "memory.current": "123\n"})
    assert snapshot.source == "node" and snapshot.total > 10 * 1024 * 1024


def test_no_cgroup_file_means_the_nodes_memory(tmp_path):
    assert mm.own_memory_cgroup(str(tmp_path / "missing"), str(tmp_path)) is None
    assert mm.read_memory(None).source == "node"


# --- the monitor's loop body, with fakes --------------------------------------------------


class FakeWorker:
    def __init__(self):
        self.running = True


def make_monitor(readings, candidates):
    killed = []

    def kill(handle, decision, snapshot):
        killed.append((handle, decision, snapshot))
    monitor = mm.MemoryMonitor(threshold=0.9, refresh_s=0.25, candidates=lambda: candidates,
                               kill=kill, alive=lambda h: h.running,
                               read=lambda: readings.pop(0), cgroup=None)
    return monitor, killed


def test_monitor_kills_above_the_threshold_one_at_a_time():
    w1, w2 = FakeWorker(), FakeWorker()
    candidates = [(task("a", b"o", 1), w1), (task("b", b"o", 2), w2)]
    high = mm.MemorySnapshot(95, 100)
    monitor, killed = make_monitor([mm.MemorySnapshot(50, 100), high, high, high], candidates)
    assert monitor.check() is None and not killed  # below: nothing happens
    assert monitor.check().victim.description == "b"
    assert killed[0][0] is w2 and killed[0][2] is high
    assert monitor.check() is None  # still above, but b has not exited yet
    w2.running = False
    candidates.pop()
    assert monitor.check().victim.description == "a"
    assert monitor.debug_state()["kills"] == 2


def test_monitor_refuses_a_threshold_outside_zero_to_one():
    with pytest.raises(ValueError, match="EMBER_MEMORY_USAGE_THRESHOLD"):
        mm.MemoryMonitor(threshold=1.5, refresh_s=0.25, candidates=list, kill=None,
                         alive=None, cgroup=None)


def test_oom_message_says_what_happened_and_what_to_do():
    text = mm.oom_message(description="task allocate", node_id=bytes(range(28)),
                          node_ip="10.0.0.1", pid=42,
                          snapshot=mm.MemorySnapshot(3 * 1024**3, 4 * 1024**3), threshold=0.7)
    assert "The task allocate was killed" in text
    assert "10.0.0.1" in text and bytes(range(28)).hex()[:12] in text
    assert "3.00 GiB / 4.00 GiB" in text and "0.70" in text
    for advice in ("num_cpus", "memory=", "EMBER_MEMORY_USAGE_THRESHOLD"):
        assert advice in text
