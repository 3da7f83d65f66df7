"""An actor's life: kill, exit_actor, crashes and restarts, retries, __init__ errors,
going out of scope, detached actors, and namespaces across drivers.

Crashes are real: a method ends its own process with ``os._exit`` or SIGKILL.
Process checks use the actor's pid; every wait polls for a state with a deadline.
"""
from __future__ import annotations

import gc
import os
import signal
import time

import psutil
import pytest

import ember as ray
from ember.exceptions import ActorDiedError, RayActorError, RayTaskError
from helpers import DriverProcess, run_driver, wait_for_condition, wait_for_file


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_pid_gone(pid: int, timeout: float = 15.0) -> None:
    wait_for_condition(lambda: pid_gone(pid), timeout, message=f"process {pid} to exit")


@ray.remote
class Mortal:
    """State that shows whether ``__init__`` ran again: ``calls`` restarts at 0."""

    def __init__(self, marker_dir=None):
        self.calls = 0
        self.marker_dir = marker_dir

    def pid(self):
        return os.getpid()

    def bump(self):
        self.calls += 1
        return self.calls

    def crash(self, how="exit"):
        if how == "exit":
            os._exit(1)
        os.kill(os.getpid(), signal.SIGKILL)

    def crash_once(self, tag):
        """Crash on the first attempt only; the marker file survives the restart."""
        marker = os.path.join(self.marker_dir, tag)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return "retried"

    def leave(self):
        ray.actor.exit_actor()
        return "unreachable"


# --- kill and exit_actor --------------------------------------------------------------


def test_kill_ends_the_actor_and_later_calls_raise_actor_died_error(shared):
    # no_restart=True (the default) wins over max_restarts.
    actor = Mortal.options(name="to-be-killed", max_restarts=2).remote()
    pid = ray.get(actor.pid.remote())
    ray.kill(actor)
    wait_pid_gone(pid)
    with pytest.raises(ActorDiedError) as info:
        ray.get(actor.bump.remote())
    message = str(info.value)
    assert "Mortal" in message and actor._ray_actor_id.hex() in message
    assert "to-be-killed" in message and "kill" in message
    assert isinstance(info.value, RayActorError)
    # And again: the death is final.
    with pytest.raises(ActorDiedError):
        ray.get(actor.pid.remote())


def test_kill_without_no_restart_restarts_the_actor(shared):
    actor = Mortal.options(max_restarts=1).remote()
    pid = ray.get(actor.pid.remote())
    assert ray.get(actor.bump.remote()) == 1
    ray.kill(actor, no_restart=False)
    wait_pid_gone(pid)
    wait_for_condition(lambda: ray.get(actor.pid.remote()) != pid,
                       message="the actor to be restarted")
    assert ray.get(actor.bump.remote()) == 1  # __init__ ran again


@ray.remote
class AsyncMortal:
    async def pid(self):
        return os.getpid()

    async def leave(self):
        ray.actor.exit_actor()


@pytest.mark.parametrize("kind", ["serial", "threaded", "async", "with max_restarts"])
def test_exit_actor_ends_the_actor(shared, kind):
    actor = {"serial": Mortal, "threaded": Mortal.options(max_concurrency=2),
             "async": AsyncMortal,
             "with max_restarts": Mortal.options(max_restarts=3)}[kind].remote()
    pid = ray.get(actor.pid.remote())
    with pytest.raises(RayActorError, match="exit_actor") as info:
        ray.get(actor.leave.remote())
    assert "Mortal" in str(info.value) and actor._ray_actor_id.hex() in str(info.value)
    wait_pid_gone(pid)
    # Later calls fail: the actor is not restarted, whatever max_restarts says.
    with pytest.raises(ActorDiedError, match="exit_actor"):
        ray.get(actor.pid.remote())


def test_an_actor_process_that_exits_with_status_0_on_its_own_is_restarted(shared):
    """Only exit_actor() and kill are deliberate: os._exit(0) in user code is a death."""
    @ray.remote(max_restarts=2, max_task_retries=-1)
    class Quitter:
        def pid(self):
            return os.getpid()

        def quit(self):
            os._exit(0)

    actor = Quitter.remote()
    pid = ray.get(actor.pid.remote())
    actor.quit.options(max_task_retries=0).remote()  # a retried quit would quit again
    wait_pid_gone(pid)
    assert ray.get(actor.pid.remote(), timeout=60) != pid   # it came back


def test_exit_actor_outside_an_actor_is_refused(shared):
    with pytest.raises(TypeError, match="exit_actor"):
        ray.actor.exit_actor()


# --- crashes, restarts, retries -----------------------------------------------------------


@pytest.mark.parametrize("how,cause", [("exit", "exit code 1"), ("sigkill", "SIGKILL")])
def test_crash_without_restarts_says_which_actor_died_and_how(shared, how, cause):
    actor = Mortal.remote()
    pid = ray.get(actor.pid.remote())
    with pytest.raises(ActorDiedError) as info:
        ray.get(actor.crash.remote(how))
    message = str(info.value)
    assert "Mortal" in message and actor._ray_actor_id.hex() in message
    assert cause in message and str(pid) in message
    with pytest.raises(ActorDiedError, match=cause):
        ray.get(actor.bump.remote())


def test_crashed_actor_is_restarted_up_to_max_restarts(shared):
    actor = Mortal.options(max_restarts=2).remote()
    pids = [ray.get(actor.pid.remote())]
    assert ray.get(actor.bump.remote()) == 1
    assert ray.get(actor.bump.remote()) == 2
    for _ in range(2):
        # No retries: the call that crashed fails, and says the actor died.
        with pytest.raises(ActorDiedError, match="exit code 1"):
            ray.get(actor.crash.remote())
        wait_pid_gone(pids[-1])
        # Calls after the crash run on the restarted actor, whose __init__ ran again.
        pids.append(ray.get(actor.pid.remote()))
        assert ray.get(actor.bump.remote()) == 1
        assert ray.get(actor.bump.remote()) == 2
    assert len(set(pids)) == 3
    with pytest.raises(ActorDiedError) as info:
        ray.get(actor.crash.remote())
    assert "max_restarts=2" in str(info.value)
    with pytest.raises(ActorDiedError):
        ray.get(actor.pid.remote())


def test_restarted_actor_knows_it_was_reconstructed(shared):
    @ray.remote(max_restarts=1)
    class Phoenix:
        def __init__(self):
            self.in_init = ray.get_runtime_context().was_current_actor_reconstructed

        def state(self):
            return self.in_init, ray.get_runtime_context().was_current_actor_reconstructed

        def crash(self):
            os._exit(1)

    phoenix = Phoenix.remote()
    assert ray.get(phoenix.state.remote()) == (False, False)
    with pytest.raises(ActorDiedError):
        ray.get(phoenix.crash.remote())
    assert ray.get(phoenix.state.remote()) == (True, True)


def test_calls_are_retried_after_a_restart_with_max_task_retries(shared, tmp_path):
    actor = Mortal.options(max_restarts=1, max_task_retries=1).remote(str(tmp_path))
    pid = ray.get(actor.pid.remote())
    crashing = actor.crash_once.remote("a")
    # Calls submitted behind the crashing one are retried too, still in order.
    later = [actor.bump.remote() for _ in range(5)]
    assert ray.get(crashing) == "retried"
    assert ray.get(later) == [1, 2, 3, 4, 5]
    assert ray.get(actor.pid.remote()) != pid


def test_max_task_retries_per_method(shared, tmp_path):
    actor = Mortal.options(max_restarts=2).remote(str(tmp_path))
    # The actor's default is no retries; this one call asks for one.
    assert ray.get(actor.crash_once.options(max_task_retries=1).remote("a")) == "retried"
    with pytest.raises(ActorDiedError):
        ray.get(actor.crash_once.remote("b"))


def test_retries_run_out(shared, tmp_path):
    actor = Mortal.options(max_restarts=3, max_task_retries=1).remote(str(tmp_path))
    with pytest.raises(ActorDiedError, match="exit code 1"):
        ray.get(actor.crash.remote())  # crashes on the first try and on its one retry
    assert ray.get(actor.bump.remote()) == 1  # one restart is left


def test_infinite_restarts_and_retries(shared, tmp_path):
    actor = Mortal.options(max_restarts=-1, max_task_retries=-1).remote(str(tmp_path))
    assert [ray.get(actor.crash_once.remote(tag)) for tag in "abc"] == ["retried"] * 3


def test_exception_in_init_fails_every_call_with_the_original_error(shared):
    @ray.remote
    class BadInit:
        def __init__(self, x):
            self.x = 1 / x

        def value(self):
            return self.x

    actor = BadInit.options(max_restarts=2).remote(0)
    for _ in range(2):
        with pytest.raises(RayActorError) as info:
            ray.get(actor.value.remote())
        message = str(info.value)
        assert "BadInit" in message and "__init__" in message
        assert "ZeroDivisionError" in message and "division by zero" in message
        assert "Traceback" in message and "self.x = 1 / x" in message
        # The cause is the __init__'s error, as a task's error would be.
        assert isinstance(info.value.cause, RayTaskError)
        assert isinstance(info.value.cause.cause, ZeroDivisionError)
    # The session is fine.
    assert ray.get(BadInit.remote(2).value.remote()) == 0.5


def test_unpicklable_init_argument_is_reported(shared):
    import threading
    with pytest.raises(TypeError):
        Mortal.remote(threading.Lock())
    assert ray.get(Mortal.remote().bump.remote()) == 1


# --- scope and owners ---------------------------------------------------------------------


def test_actor_is_terminated_when_its_last_handle_goes_out_of_scope(shared):
    actor = Mortal.options(num_cpus=2).remote()
    pid = ray.get(actor.pid.remote())
    copy = actor
    del actor
    gc.collect()
    assert ray.get(copy.bump.remote()) == 1  # one handle is still alive
    del copy
    gc.collect()
    wait_pid_gone(pid)
    # Its CPUs are free: another actor that needs both can start.
    successor = Mortal.options(num_cpus=2).remote()
    assert ray.get(successor.bump.remote(), timeout=15) == 1
    successor_pid = ray.get(successor.pid.remote())
    del successor
    gc.collect()
    wait_pid_gone(successor_pid)


def test_calls_through_a_temporary_handle_finish_before_the_actor_ends(shared):
    # The handle is gone as soon as the call is made; the call keeps the actor alive.
    pids = [ray.get(Mortal.remote().pid.remote()) for _ in range(5)]
    for pid in pids:
        wait_pid_gone(pid)


def test_handle_captured_by_a_remote_function_is_pinned(shared, tmp_path):
    """As in Ray, refs a remote function's closure captures live as long as the job:
    the function may run anywhere, later, after the driver's own handle is gone."""
    gate = str(tmp_path / "gate")
    actor = Mortal.remote()

    def make_task(captured):
        @ray.remote
        def bump_when_open():
            wait_for_file(gate)
            return ray.get(captured.bump.remote())
        return bump_when_open
    task = make_task(actor)
    ref = task.remote()
    del actor, task  # no handle left in the driver, but the function's closure
    gc.collect()
    open(gate, "w").close()
    assert ray.get(ref, timeout=30) == 1


@ray.remote
class Keeper:
    """Holds a handle to another actor until told to drop it."""

    def __init__(self):
        self.actor = None

    def keep(self, actor):
        self.actor = actor

    def bump(self):
        return ray.get(self.actor.bump.remote())

    def drop(self):
        self.actor = None


def test_handle_stored_in_another_actor_keeps_the_actor_alive(shared):
    actor = Mortal.remote()
    pid = ray.get(actor.pid.remote())
    keeper = Keeper.remote()
    ray.get(keeper.keep.remote(actor))
    del actor
    gc.collect()
    assert ray.get(keeper.bump.remote()) == 1
    assert ray.get(keeper.bump.remote()) == 2
    # The last handle anywhere is gone: the actor ends.
    ray.get(keeper.drop.remote())
    wait_pid_gone(pid)


def test_handle_passed_on_by_a_borrower_keeps_the_actor_alive(shared):
    @ray.remote
    def hand_over(actor, keeper):
        ray.get(keeper.keep.remote(actor))

    actor = Mortal.remote()
    pid = ray.get(actor.pid.remote())
    keeper = Keeper.remote()
    ray.get(hand_over.remote(actor, keeper))
    del actor
    gc.collect()
    assert ray.get(keeper.bump.remote()) == 1
    ray.get(keeper.drop.remote())
    wait_pid_gone(pid)


def test_actor_lives_while_a_task_holds_its_handle(shared, tmp_path):
    gate = str(tmp_path / "gate")

    @ray.remote
    def bump_later(actor, gate):
        deadline = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return ray.get(actor.bump.remote())

    actor = Mortal.remote()
    pid = ray.get(actor.pid.remote())
    result = bump_later.remote(actor, gate)
    del actor
    gc.collect()
    open(gate, "w").close()
    assert ray.get(result) == 1  # the task's copy of the handle kept the actor
    wait_pid_gone(pid)  # and once the task is done, nothing does


def test_actor_created_in_a_task_ends_when_the_returned_handle_goes(shared):
    @ray.remote
    def make():
        return Mortal.remote()

    actor = ray.get(make.remote())
    pid = ray.get(actor.pid.remote())
    assert ray.get(actor.bump.remote()) == 1
    del actor
    gc.collect()
    wait_pid_gone(pid)


def test_calls_wait_for_an_actor_that_waits_for_resources(shared):
    hog = Mortal.options(num_cpus=2).remote()
    ray.get(hog.pid.remote())
    waiting = Mortal.options(num_cpus=1).remote()
    calls = [waiting.bump.remote() for _ in range(3)]
    ready, _ = ray.wait(calls, num_returns=1, timeout=0.3)
    assert not ready, "a call ran on an actor that had no CPU to start"
    ray.kill(hog)
    assert ray.get(calls, timeout=30) == [1, 2, 3]


def test_kill_of_an_actor_waiting_for_resources(shared):
    hog = Mortal.options(num_cpus=2).remote()
    ray.get(hog.pid.remote())
    waiting = Mortal.options(num_cpus=1).remote()
    call = waiting.bump.remote()
    ray.kill(waiting)
    with pytest.raises(ActorDiedError, match="kill"):
        ray.get(call, timeout=30)
    ray.kill(hog)
    # Nothing holds the CPUs: neither the dead actor nor its abandoned request.
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 2,
                       message="all CPUs to be free")
    assert ray.get(Mortal.options(num_cpus=2).remote().bump.remote(), timeout=30) == 1


def test_actor_created_by_an_actor_dies_with_it(shared):
    @ray.remote
    class Parent:
        def __init__(self):
            self.child = Mortal.remote()

        def child_pid(self):
            return ray.get(self.child.pid.remote())

    parent = Parent.remote()
    child_pid = ray.get(parent.child_pid.remote())
    ray.kill(parent)
    wait_pid_gone(child_pid)


def test_named_actor_outlives_its_handles(shared):
    actor = Mortal.options(name="keeps-living").remote()
    pid = ray.get(actor.pid.remote())
    del actor
    gc.collect()
    handle = ray.get_actor("keeps-living")
    assert ray.get(handle.pid.remote()) == pid
    ray.kill(handle)
    wait_pid_gone(pid)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_actors_of_a_driver_end_when_the_driver_exits(shared, tmp_path, how):
    gcs = ray.get_runtime_context().gcs_address
    driver = DriverProcess(tmp_path, f"""
        import os
        import sys
        import ember as ray
        ray.init(address={gcs!r}, namespace="owned-by-driver")

        @ray.remote
        class Actor:
            def pid(self):
                return os.getpid()

        plain = Actor.remote()
        named = Actor.options(name="driver-named").remote()
        print("PIDS", ray.get(plain.pid.remote()), ray.get(named.pid.remote()), flush=True)
        sys.stdin.read()
    """)
    try:
        line = driver.wait_for_line(lambda line: line.startswith("PIDS"))
    finally:
        if how == "exit":
            driver.finish()
        else:
            driver.kill()
    for pid in (int(p) for p in line.split()[1:]):
        wait_pid_gone(pid)
    wait_for_condition(
        lambda: {"name": "driver-named", "namespace": "owned-by-driver"}
        not in ray.util.list_named_actors(all_namespaces=True),
        message="the exited driver's named actor to be gone")


def test_detached_actor_outlives_its_driver(shared, tmp_path):
    gcs = ray.get_runtime_context().gcs_address
    created = run_driver(tmp_path, f"""
        import os
        import ember as ray
        ray.init(address={gcs!r}, namespace="detached-ns")

        @ray.remote
        class Store:
            def __init__(self):
                self.items = []

            def add(self, item):
                self.items.append(item)
                return list(self.items)

            def pid(self):
                return os.getpid()

        store = Store.options(name="store", lifetime="detached").remote()
        ray.get(store.add.remote("from creator"))
        print("PID", ray.get(store.pid.remote()), flush=True)
    """, name="creator.py")
    assert created.returncode == 0, created.stderr
    pid = int(created.stdout.split("PID", 1)[1])
    # Another driver finds it by name after its creator is gone.
    used = run_driver(tmp_path, f"""
        import ember as ray
        ray.init(address={gcs!r}, namespace="detached-ns")
        print("ITEMS", ray.get(ray.get_actor("store").add.remote("from user")), flush=True)
    """, name="user.py")
    assert used.returncode == 0, used.stderr
    assert "['from creator', 'from user']" in used.stdout
    assert not pid_gone(pid)
    # So does this driver, in another namespace, naming the actor's.
    store = ray.get_actor("store", namespace="detached-ns")
    assert ray.get(store.add.remote("from test")) == ["from creator", "from user", "from test"]
    ray.kill(store)
    wait_pid_gone(pid)
    with pytest.raises(ValueError, match="store"):
        ray.get_actor("store", namespace="detached-ns")


def test_namespaces_isolate_names_between_drivers(shared, tmp_path):
    gcs = ray.get_runtime_context().gcs_address
    first = DriverProcess(tmp_path, f"""
        import sys
        import ember as ray
        ray.init(address={gcs!r}, namespace="team-a")

        @ray.remote
        class Owner:
            def whose(self):
                return "team-a"

        actor = Owner.options(name="same-name").remote()
        ray.get(actor.whose.remote())
        print("READY", ray.util.list_named_actors(), flush=True)
        sys.stdin.read()
    """, name="team_a.py")
    try:
        first.wait_for_line(lambda line: line.startswith("READY"))
        second = run_driver(tmp_path, f"""
            import ember as ray
            ray.init(address={gcs!r}, namespace="team-b")

            @ray.remote
            class Owner:
                def whose(self):
                    return "team-b"

            try:
                ray.get_actor("same-name")
            except ValueError:
                print("NOT VISIBLE")
            mine = Owner.options(name="same-name").remote()
            print("MINE", ray.get(ray.get_actor("same-name").whose.remote()))
            print("THEIRS", ray.get(ray.get_actor("same-name", namespace="team-a")
                                    .whose.remote()))
            print("LIST", sorted(ray.util.list_named_actors()))
            every = ray.util.list_named_actors(all_namespaces=True)
            print("ALL", sorted((a["namespace"], a["name"]) for a in every
                                if a["name"] == "same-name"))
        """, name="team_b.py")
        assert second.returncode == 0, second.stderr
        out = second.stdout
        assert "NOT VISIBLE" in out
        assert "MINE team-b" in out and "THEIRS team-a" in out
        assert "LIST ['same-name']" in out
        assert "ALL [('team-a', 'same-name'), ('team-b', 'same-name')]" in out
        assert first.lines[0] == "READY ['same-name']"
    finally:
        first.finish()
    wait_for_condition(
        lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"] == "same-name"],
        message="both drivers' actors to be gone")


# --- several nodes ----------------------------------------------------------------------


def test_actors_across_nodes_and_a_node_failure(fresh):
    """Placement on a chosen node, and what happens to its actors when it dies."""
    from ember.cluster_utils import Cluster
    from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class Where:
        def node(self):
            return ray.get_runtime_context().get_node_id()

        def pid(self):
            return os.getpid()

    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1)
        other = cluster.add_node(num_cpus=1, resources={"other": 1})
        cluster.connect()
        pinned = Where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            other.node_id, soft=False)).remote()
        by_resource = Where.options(resources={"other": 1}).remote()
        movable = Where.options(max_restarts=1, scheduling_strategy=NodeAffinitySchedulingStrategy(
            other.node_id, soft=True)).remote()
        assert ray.get([a.node.remote() for a in (pinned, by_resource, movable)]) == \
            [other.node_id] * 3
        spread = [Where.options(scheduling_strategy="SPREAD").remote() for _ in range(2)]
        assert set(ray.get([a.node.remote() for a in spread])) == {head.node_id, other.node_id}

        cluster.remove_node(other, allow_graceful=False)
        # An actor that may restart comes back on the node that is left ...
        wait_for_condition(lambda: ray.get(movable.node.remote(), timeout=10) == head.node_id,
                           timeout=30, message="the actor to restart on the head node")
        # ... one that may not says its node died.
        with pytest.raises(ActorDiedError, match="node"):
            ray.get(pinned.node.remote(), timeout=30)
    finally:
        cluster.shutdown()
