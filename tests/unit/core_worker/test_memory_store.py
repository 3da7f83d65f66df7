"""The memory store's waiters, without a cluster: the interleavings that matter."""
import threading

from ember.core_worker.memory_store import CountdownWaiter, MemoryStore
from ember.protocol.common import VALUE_PICKLE, SerializedValue

VALUE = SerializedValue(VALUE_PICKLE, b"x")


def test_arrival_between_registration_and_count_is_not_lost():
    # get() registers its waiter, then counts what was already there. A value
    # that arrives in between (from the I/O thread) must still count.
    store = MemoryStore(threading.RLock())
    waiter = CountdownWaiter(2)
    absent = store.wait_for([b"a", b"b"], waiter)
    store.put(b"a", VALUE)                      # arrives before the count below
    waiter.satisfied(2 - absent)
    assert not waiter.done
    store.put(b"b", VALUE)
    assert waiter.wait(timeout=1.0)


def test_values_already_present_satisfy_the_waiter_at_once():
    store = MemoryStore(threading.RLock())
    store.put(b"a", VALUE)
    waiter = CountdownWaiter(1)
    absent = store.wait_for([b"a", b"b"], waiter)
    waiter.satisfied(2 - absent)
    assert waiter.done and waiter.wait(timeout=0)


def test_waiter_releases_once_even_when_over_satisfied():
    waiter = CountdownWaiter(1)
    waiter.satisfied(1)
    waiter.notify(b"late")                      # must not release a released lock
    assert waiter.wait(timeout=0)
