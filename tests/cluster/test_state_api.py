"""``ember.util.state`` (``ray.util.state``) against a real cluster.

Tasks and actor calls appear in the state API within 2 s of finishing (task
events are flushed about once a second), with Ray's field names; queries work
from the driver, from inside tasks and async actors, and from another process
that passes the address. Bad input gives one clear error naming the valid
choices.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import ember as ray
from ember.util import state
from ember.util.state import RayStateApiException
from helpers import run_driver, wait_for_condition


@ray.remote
def square(x):
    return x * x


@ray.remote
def fails():
    raise ValueError("state api test failure")


@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        print("counter at", self.n)
        return self.n


def tasks_named(name, **kw):
    return state.list_tasks(filters=[("name", "=", name)], limit=0, **kw)


def test_tasks_appear_with_rays_fields(shared):
    ray.get([square.remote(i) for i in range(5)])
    # Both halves (the owner's and the executor's) arrive within about a second each.
    wait_for_condition(lambda: len([t for t in tasks_named("square")
                                    if t.state == "FINISHED" and t.worker_pid]) == 5,
                       timeout=2.5, message="5 finished square tasks within 2 s of finishing")
    t = tasks_named("square", detail=True)[0]
    assert t["func_or_class_name"] == "square" and t.type == "NORMAL_TASK"
    assert t.job_id == ray.get_runtime_context().get_job_id()
    assert t.worker_pid > 0 and len(t.node_id) == 56 and t.worker_id
    assert t.required_resources == {"CPU": 1.0}
    states = [e["state"] for e in t.events]
    assert states[0] == "PENDING_ARGS_AVAIL" and "RUNNING" in states and "FINISHED" in states
    assert t.creation_time_ms <= t.start_time_ms <= t.end_time_ms
    # Without detail, detail-only fields are empty, as in Ray.
    assert tasks_named("square")[0].events is None


def test_failed_task_has_error_type_and_message(shared):
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(fails.remote())
    wait_for_condition(lambda: [t for t in tasks_named("fails") if t.error_type],
                       timeout=3, message="the failed task with its error")
    t = state.list_tasks(filters=[("name", "=", "fails"), ("state", "=", "failed")],
                         detail=True)[0]
    assert t.error_type == "TASK_EXECUTION_EXCEPTION"
    assert "state api test failure" in t.error_message


def test_actors_actor_tasks_and_get(shared):
    c = Counter.options(name="state-counter").remote()
    ray.get([c.inc.remote() for _ in range(3)])
    actors = state.list_actors(filters=[("class_name", "=", "Counter"),
                                        ("state", "=", "ALIVE")])
    assert [a.name for a in actors] == ["state-counter"]
    actor = state.get_actor(actors[0].actor_id)
    assert actor.pid > 0 and actor.ray_namespace and actor.state == "ALIVE"
    wait_for_condition(lambda: len(state.list_tasks(
        filters=[("actor_id", "=", actor.actor_id), ("type", "=", "ACTOR_TASK"),
                 ("state", "=", "FINISHED")])) == 3, timeout=3, message="3 actor calls")
    wait_for_condition(lambda: [t.func_or_class_name for t in state.list_tasks(
        filters=[("actor_id", "=", actor.actor_id), ("type", "=", "ACTOR_CREATION_TASK")])]
        == ["Counter.__init__"], timeout=3, message="the actor's creation task")
    summary = state.summarize_actors()["cluster"]["summary"]
    assert summary["Counter"]["state_counts"]["ALIVE"] >= 1
    ray.kill(c)
    wait_for_condition(lambda: state.get_actor(actor.actor_id).state == "DEAD", timeout=10,
                       message="the killed actor DEAD")
    assert state.get_actor("00" * 16) is None


def test_get_task_by_id_and_by_ref(shared):
    ref = square.remote(3)
    ray.get(ref)
    wait_for_condition(lambda: getattr(state.get_task(ref), "func_or_class_name", "")
                       == "square", timeout=3, message="the task by its ref")
    t = state.get_task(ref)
    assert t.func_or_class_name == "square" and state.get_task(t.task_id).task_id == t.task_id
    assert state.get_task("ab" * 24) is None


def test_summarize_tasks_counts_states_per_function(shared):
    ray.get([square.remote(i) for i in range(3)])
    wait_for_condition(lambda: state.summarize_tasks()["cluster"]["summary"]
                       .get("square", {}).get("state_counts", {}).get("FINISHED", 0) >= 3,
                       timeout=3, message="square in the summary")
    summary = state.summarize_tasks()["cluster"]
    assert summary["summary"]["square"]["type"] == "NORMAL_TASK"
    assert summary["total_tasks"] >= 3


def test_nodes_jobs_workers_objects_placement_groups(shared):
    (node,) = state.list_nodes()
    assert node.state == "ALIVE" and node.is_head_node and node.resources_total["CPU"] == 2
    assert state.get_node(node.node_id).node_ip == node.node_ip
    jobs = state.list_jobs(filters=[("status", "=", "RUNNING")])
    assert ray.get_runtime_context().get_job_id() in [j.job_id for j in jobs]
    workers = state.list_workers()
    driver = [w for w in workers if w.worker_type == "DRIVER" and w.pid == os.getpid()]
    assert driver and state.get_worker(driver[0].worker_id).pid == os.getpid()
    held = ray.put(b"x" * 1000)
    objects = state.list_objects(filters=[("object_id", "=", held.hex())])
    assert objects and objects[0].reference_type == "LOCAL_REFERENCE"
    assert objects[0].type == "DRIVER" and objects[0].pid == os.getpid()
    assert state.summarize_objects()["cluster"]["total_objects"] >= 1
    assert state.get_objects(held.hex())[0].object_id == held.hex()
    pg = ray.util.placement_group([{"CPU": 1}], name="state-pg")
    ray.get(pg.ready())
    groups = state.list_placement_groups(filters=[("name", "=", "state-pg")], detail=True)
    assert groups[0].state == "CREATED" and groups[0].bundles[0]["unit_resources"] == {
        "CPU": 1.0}
    assert state.get_placement_group(groups[0].placement_group_id).name == "state-pg"
    ray.util.remove_placement_group(pg)


def test_limit_and_not_equal_filters(shared):
    ray.get([square.remote(i) for i in range(4)])
    wait_for_condition(lambda: len(tasks_named("square")) >= 4, timeout=3,
                       message="square tasks")
    assert len(state.list_tasks(limit=2)) == 2
    others = state.list_tasks(filters=[("name", "!=", "square")], limit=0)
    assert all(t.name != "square" for t in others)


def test_state_api_inside_tasks_and_async_actors(shared):
    @ray.remote
    def nodes_from_task():
        from ember.util.state import list_nodes
        return len(list_nodes())

    @ray.remote
    class AsyncLister:
        async def count(self):
            from ember.util.state import list_actors
            return len(list_actors(filters=[("name", "=", "async-lister")]))

    assert ray.get(nodes_from_task.remote()) == 1
    lister = AsyncLister.options(name="async-lister").remote()
    assert ray.get(lister.count.remote()) == 1
    ray.kill(lister)


def test_state_api_from_another_process_by_address(shared, tmp_path):
    address = ray.get_runtime_context().gcs_address
    proc = run_driver(tmp_path, f"""
        import json
        from ember.util.state import list_nodes, list_jobs
        print(json.dumps([len(list_nodes(address={address!r})),
                          len(list_jobs(address={address!r}))]))
    """)
    assert proc.returncode == 0, proc.stderr
    nodes, jobs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert nodes == 1 and jobs >= 1


def test_logs_of_an_actor_and_listing(shared):
    c = Counter.remote()
    ray.get(c.inc.remote())
    actor_id = c._actor_id.hex()
    files = state.list_logs()
    assert "gcs_server" in files and files["worker_out"]
    wait_for_condition(lambda: any("counter at 1" in line
                                   for line in state.get_log(actor_id=actor_id)),
                       timeout=10, message="the actor's print in its log")
    ray.kill(c)


def test_timeline_has_a_span_per_task_on_its_worker(shared, tmp_path):
    ray.get([square.remote(i) for i in range(3)])
    wait_for_condition(lambda: len([t for t in tasks_named("square")
                                    if t.state == "FINISHED"]) >= 3, timeout=3,
                       message="finished tasks")
    path = tmp_path / "trace.json"
    ray.timeline(str(path))
    events = json.loads(path.read_text())
    spans = [e for e in events if e["ph"] == "X" and e["name"] == "square"]
    assert len(spans) >= 3
    for span in spans:
        assert span["dur"] >= 0 and span["tid"].startswith("worker:")
        assert span["args"]["task_id"] and span["pid"].startswith("node:")


@pytest.mark.parametrize("call, message", [
    (lambda: state.list_tasks(filters=[("bogus", "=", "1")]),
     "Unknown filter key 'bogus' for tasks; valid keys: actor_id"),
    (lambda: state.list_actors(filters=[("state", "ALIVE")]), "Malformed filter"),
    (lambda: state.list_nodes(filters=[("state", "~", "ALIVE")]),
     "Unknown filter predicate '~'"),
])
def test_bad_filters_raise_value_error_naming_valid_choices(shared, call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
    assert ray.get(square.remote(2)) == 4  # the cluster keeps working


def test_no_cluster_at_address_is_a_connection_error():
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        state.list_nodes(address="127.0.0.1:9", timeout=2)


def test_get_log_of_unknown_actor(shared):
    with pytest.raises(ValueError, match="No actor with id"):
        list(state.get_log(actor_id="00" * 16))
    with pytest.raises(ValueError, match="None of filename"):
        list(state.get_log())
    assert issubclass(RayStateApiException, Exception)


def _failing_hook():
    raise RuntimeError("setup hook refuses")


def test_runtime_envs_set_up_by_workers_are_listed(shared):
    env = {"env_vars": {"STATE_API_ENV": "listed"}}
    assert ray.get(read_env.options(runtime_env=env).remote()) == "listed"
    with pytest.raises(ray.exceptions.RuntimeEnvSetupError):
        ray.get(read_env.options(runtime_env={
            "worker_process_setup_hook": _failing_hook}).remote())
    envs = state.list_runtime_envs(detail=True)
    ok = [e for e in envs if e.runtime_env.get("env_vars") == env["env_vars"]]
    assert len(ok) == 1 and ok[0].success and ok[0].creation_time_ms > 0
    assert ok[0].node_id == ray.get_runtime_context().get_node_id()
    failed = [e for e in envs if "worker_process_setup_hook" in e.runtime_env]
    assert failed and not failed[0].success and "setup hook refuses" in failed[0].error
    assert state.list_runtime_envs(filters=[("success", "=", "False")], detail=True) == failed


@ray.remote
def read_env():
    return os.environ.get("STATE_API_ENV")


def test_a_task_of_a_driver_that_exits_at_once_keeps_its_executor_side(shared, tmp_path):
    """The job's workers are stopped as its driver exits; they send their task events
    first, so the task still shows where it ran."""
    address = ray.get_runtime_context().gcs_address
    proc = run_driver(tmp_path, f"""
        import ember as ray
        ray.init(address={address!r})

        @ray.remote
        def brief_last_words():
            return 1
        ray.get(brief_last_words.remote())
    """)
    assert proc.returncode == 0, proc.stderr

    def ran():
        found = tasks_named("brief_last_words", detail=True)
        return found and found[0].state == "FINISHED" and found[0].worker_pid
    wait_for_condition(ran, timeout=10, message="the task with its worker's pid")


@ray.remote
class Leaver:
    def pid(self):
        return os.getpid()

    def leave(self):
        ray.actor.exit_actor()


def test_workers_that_ended_stay_listed_with_how_they_ended(shared):
    """The GCS's worker table keeps dead workers, with Ray's exit types."""
    leaver, victim = Leaver.remote(), Leaver.remote()
    leaver_pid, victim_pid = ray.get([leaver.pid.remote(), victim.pid.remote()])
    leaver.leave.remote()
    os.kill(victim_pid, signal.SIGKILL)

    def ended():
        rows = {w.pid: w for w in state.list_workers(limit=0, detail=True)}
        return all(pid in rows and not rows[pid].is_alive for pid in (leaver_pid, victim_pid))
    wait_for_condition(ended, timeout=30)
    rows = {w.pid: w for w in state.list_workers(limit=0, detail=True)}
    assert rows[leaver_pid].exit_type == "INTENDED_USER_EXIT"
    assert rows[victim_pid].exit_type == "SYSTEM_ERROR"
    assert "SIGKILL" in rows[victim_pid].exit_detail
    assert rows[victim_pid].end_time_ms >= rows[victim_pid].start_time_ms > 0
    assert state.get_worker(rows[victim_pid].worker_id).is_alive is False
