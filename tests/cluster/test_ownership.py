"""Ownership across processes: borrowing, nested refs, owner death, batched get and wait.

The owner of an object keeps it while anyone holds a ref: its own process,
values containing the ref, and borrowers (other processes it registered).
These tests move refs between the driver, tasks and actors, drop the
original holders, and check that the value is still readable where it is
held, that it is freed once nobody holds it (through the owner's reference
table and the store's statistics), and that a dead owner gives
``OwnerDiedError`` rather than a hang.
"""
from __future__ import annotations

import gc
import os

import numpy as np
import psutil
import pytest

import helpers

import ember as ray
from ember.core_worker import context
from ember.exceptions import ObjectLostError, OwnerDiedError, WorkerCrashedError
from helpers import wait_for_condition

MB = 1024 * 1024


@ray.remote
class Holder:
    """Keeps refs it is given (nested in lists, so they stay refs) and reads them later."""

    def __init__(self):
        self.refs = []

    def hold(self, refs):
        self.refs.extend(refs)
        return len(self.refs)

    def read(self):
        return [_summary(v) for v in ray.get(self.refs, timeout=60)]

    def owners(self):
        return [ref.owner_address().worker_id.hex() for ref in self.refs]

    def pass_to(self, other):
        return ray.get(other.hold.remote(self.refs))

    def clear(self):
        self.refs = []

    def worker_id(self):
        return context.core.worker_id


@ray.remote
class Owner:
    """Puts objects, so that it owns them, and hands out refs to them."""

    def put(self, value):
        return [ray.put(value)]

    def put_and_give(self, value, holder):
        ref = ray.put(value)
        ray.get(holder.hold.remote([ref]))
        return ref.hex()

    def put_many(self, n):
        self.refs = [ray.put(i) for i in range(n)]
        return self.refs

    def count_status_requests(self):
        """From now on, count the GetObjectStatus requests this owner answers."""
        from ember.protocol import core_worker as cw
        handlers = context.core.handlers
        original = handlers[cw.GetObjectStatus]
        self.requests = []

        def counting(conn, req):
            self.requests.append(len(req.object_ids))
            return original(conn, req)
        handlers[cw.GetObjectStatus] = counting

    def status_requests(self):
        return self.requests

    def pid(self):
        return os.getpid()


def _summary(value):
    """Something comparable for small values and large arrays alike."""
    if isinstance(value, np.ndarray):
        return ("array", value.nbytes, int(value[0]), int(value[-1]))
    return value


@ray.remote
def store_in(holder, refs):
    return ray.get(holder.hold.remote(refs))


@ray.remote
def put_and_return(value):
    return [ray.put(value)]


@ray.remote
def read_nested(holder):
    """``holder``: a list holding a ref to a list of refs; the values of those."""
    inner = ray.get(holder[0])
    return [_summary(value) for value in ray.get(inner)]


@ray.remote(max_retries=0)
def put_give_and_die(holder, value):
    ref = ray.put(value)
    ray.get(holder.hold.remote([ref]))
    os._exit(1)


def big(value: int) -> np.ndarray:
    return np.full(MB // 8, value, dtype=np.int64)  # 1 MiB: above the inline limit


def references():
    return context.core.references


def borrowers_of(object_id: bytes) -> set[bytes]:
    ref = references().refs.get(object_id)
    assert ref is not None, "the owner freed an object that is still borrowed"
    return set(ref.borrowers or ())


def store_objects() -> int:
    return context.core.object_store.stats()["num_objects"]


def wait_freed(object_ids, message="the owner to free the objects"):
    gc.collect()
    wait_for_condition(lambda: not any(references().is_referenced(o) for o in object_ids),
                       message=message)


def wait_dead(pid: int) -> None:
    def gone():
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_for_condition(gone, timeout=20, message=f"process {pid} to die")


# --- borrowing ------------------------------------------------------------------------


def test_ref_nested_in_a_task_argument_is_kept_by_the_actor_it_is_stored_in(shared):
    holder = Holder.remote()
    holder_id = ray.get(holder.worker_id.remote())
    small, large = ray.put("small value"), ray.put(big(7))
    ids = [small.binary(), large.binary()]
    assert ray.get(store_in.remote(holder, [small, large])) == 2
    del small, large
    # Only the actor borrows them now; the task gave its registrations back.
    for oid in ids:
        wait_for_condition(lambda oid=oid: borrowers_of(oid) == {holder_id},
                           message="the task to return its borrow")
        assert references().count(oid) == 0
    assert ray.get(holder.read.remote()) == ["small value", ("array", MB, 7, 7)]
    ray.get(holder.clear.remote())
    wait_freed(ids)
    wait_for_condition(lambda: store_objects() == 0, message="the store copy deleted")


def test_task_returns_a_ref_to_an_object_it_put(shared):
    [small] = ray.get(put_and_return.remote("from the task"))
    [large] = ray.get(put_and_return.remote(big(3)))
    driver = context.core.worker_id
    assert small.owner_address().worker_id != driver
    assert large.owner_address().worker_id != driver
    # The tasks have ended; their workers still own the objects for us.
    assert ray.get(small, timeout=30) == "from the task"
    value = ray.get(large, timeout=30)
    assert _summary(value) == ("array", MB, 3, 3) and not value.flags.writeable
    assert ray.get(read_nested.remote([ray.put([small, large])])) == [
        "from the task", ("array", MB, 3, 3)]
    del value, small, large
    gc.collect()
    wait_for_condition(lambda: store_objects() == 0,
                       message="the task's worker to free its object once we dropped it")


def test_refs_inside_refs(shared):
    inner = ray.put(1)
    outer = ray.put([inner])
    inner_id = inner.binary()
    del inner
    # The put value holds the inner ref: it outlives the driver's own ref.
    assert references().is_referenced(inner_id)
    assert ray.get(ray.get(outer)[0]) == 1
    # Three levels, the innermost in the store, read by a task.
    deepest = ray.put(big(5))
    middle = ray.put([deepest])
    top = ray.put([middle])
    ids = [deepest.binary(), middle.binary(), top.binary(), outer.binary(), inner_id]
    del deepest, middle
    [middle_again] = ray.get(top)
    assert ray.get(read_nested.remote([middle_again])) == [("array", MB, 5, 5)]
    del middle_again, top, outer
    wait_freed(ids, "the nested objects to be freed together")
    wait_for_condition(lambda: store_objects() == 0, message="the store copy deleted")


def test_ref_passed_from_actor_to_actor(shared):
    first, second = Holder.remote(), Holder.remote()
    second_id = ray.get(second.worker_id.remote())
    refs = [ray.put("hello"), ray.put(big(9))]
    ids = [r.binary() for r in refs]
    assert ray.get(first.hold.remote(refs)) == 2
    del refs
    assert ray.get(first.pass_to.remote(second)) == 2
    ray.get(first.clear.remote())
    for oid in ids:
        wait_for_condition(lambda oid=oid: borrowers_of(oid) == {second_id},
                           message="the first actor to return its borrow")
    assert ray.get(second.read.remote()) == ["hello", ("array", MB, 9, 9)]
    ray.get(second.clear.remote())
    wait_freed(ids)


@ray.remote
class Keeper:
    """Gets its refs at creation."""

    def __init__(self, refs):
        self.refs = refs

    def read(self):
        return [_summary(v) for v in ray.get(self.refs, timeout=60)]


def test_refs_inside_an_inlined_argument_and_a_constructor_argument(shared):
    holder = Holder.remote()
    inner_small, inner_large = ray.put("inner"), ray.put(big(8))
    outer = ray.put([inner_small, inner_large])  # small: travels inlined in the task spec
    ids = [inner_small.binary(), inner_large.binary(), outer.binary()]
    keeper = Keeper.remote([inner_small, inner_large])
    del inner_small, inner_large
    # A small top-level ref argument is replaced by its value, refs and all.
    assert ray.get(store_in.remote(holder, outer)) == 2
    del outer
    gc.collect()
    assert ray.get(holder.read.remote()) == ["inner", ("array", MB, 8, 8)]
    assert ray.get(keeper.read.remote()) == ["inner", ("array", MB, 8, 8)]
    ray.get(holder.clear.remote())
    del keeper
    wait_freed(ids, "the objects to be freed once the actors let go")


# --- owner death -----------------------------------------------------------------------


def _assert_owner_died(exc_info, owner_hex: str) -> None:
    assert isinstance(exc_info.value, ObjectLostError)
    message = str(exc_info.value)
    assert owner_hex[:8] in message and "died" in message


@pytest.mark.timeout(90)
def test_get_after_the_owner_actor_is_killed_raises_owner_died(shared):
    owner = Owner.remote()
    pid = ray.get(owner.pid.remote())
    [small] = ray.get(owner.put.remote("owned by the actor"))
    [large] = ray.get(owner.put.remote(big(1)))
    owner_hex = small.owner_address().worker_id.hex()
    wait_for_condition(lambda: store_objects() == 1, message="the actor's object stored")
    ray.kill(owner)
    wait_dead(pid)
    for ref in (small, large):
        with pytest.raises(OwnerDiedError) as info:
            ray.get(ref, timeout=30)
        _assert_owner_died(info, owner_hex)
    # The raylet freed the dead owner's store copy.
    wait_for_condition(lambda: store_objects() == 0, message="the dead owner's object freed")


@pytest.mark.timeout(90)
def test_borrower_actor_sees_owner_died_when_the_owner_process_exits(shared):
    holder = Holder.remote()
    with pytest.raises(WorkerCrashedError):
        ray.get(put_give_and_die.remote(holder, big(2)), timeout=60)
    [owner_hex] = ray.get(holder.owners.remote())
    with pytest.raises(OwnerDiedError) as info:
        ray.get(holder.read.remote(), timeout=60)
    _assert_owner_died(info, owner_hex)
    wait_for_condition(lambda: store_objects() == 0, message="the dead owner's object freed")


@pytest.mark.timeout(90)
def test_ref_stored_in_another_actor_is_lost_when_its_owner_is_killed(shared):
    owner, holder = Owner.remote(), Holder.remote()
    pid = ray.get(owner.pid.remote())
    ray.get(owner.put_and_give.remote("kept elsewhere", holder))
    [owner_hex] = ray.get(holder.owners.remote())
    ray.kill(owner)
    wait_dead(pid)
    with pytest.raises(OwnerDiedError) as info:
        ray.get(holder.read.remote(), timeout=60)
    _assert_owner_died(info, owner_hex)
    assert ray.get(holder.hold.remote([ray.put("a new one")])) == 2


# --- many refs ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_get_of_10k_borrowed_refs_is_batched(shared):
    owner = Owner.remote()
    refs = ray.get(owner.put_many.remote(10_000))
    assert len(refs) == 10_000
    ray.get(owner.count_status_requests.remote())
    assert ray.get(refs, timeout=60) == list(range(10_000))
    requests = ray.get(owner.status_requests.remote())
    assert sum(requests) == 10_000
    assert len(requests) <= 10, f"{len(requests)} requests for 10,000 refs of one owner"
    # A second get is served locally.
    assert ray.get(refs[::-1], timeout=60) == list(range(10_000))[::-1]
    assert len(ray.get(owner.status_requests.remote())) == len(requests)


def test_get_of_10k_owned_refs(shared):
    refs = [ray.put(i) for i in range(10_000)]
    assert ray.get(refs) == list(range(10_000))
    mixed = refs[:5_000] + [ray.put(big(i)) for i in range(3)]
    values = ray.get(mixed)
    assert values[:5_000] == list(range(5_000))
    assert [_summary(v) for v in values[5_000:]] == [("array", MB, i, i) for i in range(3)]


@pytest.mark.timeout(120)
def test_wait_over_1k_refs(shared):
    owner = Owner.remote()
    borrowed = ray.get(owner.put_many.remote(1_000))
    ray.get(owner.count_status_requests.remote())
    ready, not_ready = ray.wait(borrowed, num_returns=1_000, timeout=60)
    assert ready == borrowed and not_ready == []
    assert len(ray.get(owner.status_requests.remote())) <= 10
    owned = [ray.put(i) for i in range(1_000)]
    ready, not_ready = ray.wait(owned, num_returns=600, timeout=60)
    assert ready == owned[:600] and not_ready == owned[600:]


# --- wait semantics ------------------------------------------------------------------------


wait_for_file = ray.remote(helpers.path_then)


@pytest.mark.timeout(60)
def test_wait_returns_ready_refs_in_input_order(shared, tmp_path):
    gate = tmp_path / "go"
    pending = wait_for_file.remote(str(gate), "late")
    done = [ray.put(i) for i in range(4)]
    refs = [done[2], pending, done[0], done[3], done[1]]
    ready, not_ready = ray.wait(refs, num_returns=4, timeout=30)
    assert ready == [done[2], done[0], done[3], done[1]] and not_ready == [pending]
    # num_returns is respected even when more are ready: the first ones in input order.
    ready, not_ready = ray.wait(refs, num_returns=2, timeout=30)
    assert ready == [done[2], done[0]]
    assert not_ready == [pending, done[3], done[1]]
    # timeout=0 returns at once with whatever is ready.
    ready, not_ready = ray.wait([pending] + done[:1], num_returns=2, timeout=0)
    assert ready == done[:1] and not_ready == [pending]
    ready, not_ready = ray.wait([pending], timeout=0)
    assert ready == [] and not_ready == [pending]
    # A timeout that runs out returns the partial result.
    ready, not_ready = ray.wait(refs, num_returns=5, timeout=0.2)
    assert len(ready) == 4 and not_ready == [pending]
    gate.touch()
    ready, not_ready = ray.wait(refs, num_returns=5, timeout=30)
    assert ready == refs and not_ready == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fetch_local", [True, False])
def test_wait_fetch_local(shared, fetch_local):
    owner = Owner.remote()
    [small] = ray.get(owner.put.remote("small"))
    [large] = ray.get(owner.put.remote(big(4)))
    task_refs = [put_and_return.remote(i) for i in range(3)]
    refs = [large, small] + task_refs
    ready, not_ready = ray.wait(refs, num_returns=len(refs), timeout=30,
                                fetch_local=fetch_local)
    assert ready == refs and not_ready == []
    assert ray.get(small) == "small" and _summary(ray.get(large)) == ("array", MB, 4, 4)
    ready, _ = ray.wait(refs, num_returns=1, timeout=30, fetch_local=fetch_local)
    assert ready == [large]


# --- owners outlive their idleness ----------------------------------------------------------


@ray.remote
def meet_then(gate_dir, name, peer, put):
    """Run beside ``peer`` (each waits for the other), so two workers are used."""
    import time
    open(os.path.join(gate_dir, name), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(gate_dir, peer)):
        if time.monotonic() > deadline:
            raise TimeoutError("the other task never started")
        time.sleep(0.01)
    return os.getpid(), [ray.put(big(6))] if put else []


@pytest.mark.timeout(60)
def test_idle_worker_that_owns_borrowed_objects_is_not_reaped(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_IDLE_WORKER_SOFT_LIMIT", "0")
    monkeypatch.setenv("EMBER_IDLE_WORKER_TIMEOUT_S", "0.1")
    fresh(num_cpus=2)
    (owner_pid, [ref]), (other_pid, _) = ray.get([
        meet_then.remote(str(tmp_path), "a", "b", True),
        meet_then.remote(str(tmp_path), "b", "a", False)])
    assert owner_pid != other_pid
    # The reaper ends the idle worker that owns nothing...
    wait_dead(other_pid)
    # ...and keeps the one whose object we still hold, as Ray does.
    assert psutil.pid_exists(owner_pid)
    assert _summary(ray.get(ref, timeout=30)) == ("array", MB, 6, 6)
    del ref
    gc.collect()
    # Once nothing it owns is referenced, it may go too.
    wait_dead(owner_pid)
