"""The reference counter, with a real memory store and no processes.

An object lives while it has local refs, containing values or borrowers; when
the last goes, an owned object is freed (its value leaves the store and the
``on_free`` callbacks run) and a borrowed one gives its registrations back to
its owner, once.
"""
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from ember.core_worker.memory_store import MemoryStore
from ember.core_worker.reference_counter import ReferenceCounter
from ember.protocol.common import VALUE_PICKLE, Address, ObjectRefInfo, SerializedValue

ME = b"m" * 28
OTHER = Address(b"n" * 28, "127.0.0.1", 2, worker_id=b"o" * 28)
BORROWER = Address(b"n" * 28, "127.0.0.1", 3, worker_id=b"b" * 28)


def oid(i: int) -> bytes:
    return bytes([i]) * 28


def counter():
    lock = threading.RLock()
    store = MemoryStore(lock)
    refs = ReferenceCounter(lock, store, ME)
    freed, returned = [], []
    refs.on_free.append(lambda object_id, ref: freed.append(object_id))
    refs.on_borrows_released = returned.extend
    return refs, store, freed, returned


def value(nested=()):
    return SerializedValue(VALUE_PICKLE, data=b"x", nested_refs=list(nested))


def test_an_owned_object_is_freed_with_its_last_local_ref():
    refs, store, freed, _ = counter()
    refs.add_local_ref(oid(1), None)
    refs.add_local_ref(oid(1), None)
    store.put(oid(1), value())
    refs.remove_local_ref(oid(1))
    assert store.contains(oid(1)) and freed == []
    refs.remove_local_ref(oid(1))
    assert not store.contains(oid(1)) and freed == [oid(1)]


def test_a_borrower_keeps_an_owned_object_until_it_gives_back_every_registration():
    refs, store, freed, _ = counter()
    refs.add_local_ref(oid(1), None)
    assert refs.add_borrower(oid(1), BORROWER)
    assert refs.add_borrower(oid(1), BORROWER)
    refs.remove_local_ref(oid(1))
    refs.remove_borrower(oid(1), BORROWER.worker_id, 1)
    assert freed == []
    refs.remove_borrower(oid(1), BORROWER.worker_id, 1)
    assert freed == [oid(1)]
    assert not refs.add_borrower(oid(1), BORROWER)  # too late: it is gone


def test_a_dead_borrower_releases_what_it_held():
    refs, _, freed, _ = counter()
    refs.add_local_ref(oid(1), None)
    refs.add_borrower(oid(1), BORROWER)
    refs.remove_local_ref(oid(1))
    refs.drop_borrower(BORROWER.worker_id)
    assert freed == [oid(1)]


def test_a_borrowed_object_returns_its_registrations_once_to_its_owner():
    refs, _, freed, returned = counter()
    info = ObjectRefInfo(oid(2), OTHER)
    refs.hold([info], registered=True)      # a value holding it arrived from elsewhere
    refs.add_local_ref(oid(2), OTHER)
    refs.hold([info], registered=True)
    refs.release([info])
    refs.release([info])
    assert returned == []
    refs.remove_local_ref(oid(2))
    assert returned == [(OTHER, oid(2), 2)] and freed == []   # freeing is the owner's job


def test_freeing_a_value_releases_the_refs_it_contained():
    refs, store, freed, _ = counter()
    refs.add_local_ref(oid(1), None)            # inner, put
    refs.add_local_ref(oid(2), None)            # outer, put, contains inner
    store.put(oid(2), value([ObjectRefInfo(oid(1), None)]))
    refs.set_nested(oid(2), [ObjectRefInfo(oid(1), None)])
    refs.remove_local_ref(oid(1))
    assert freed == []                          # the outer value keeps it
    refs.remove_local_ref(oid(2))
    assert freed == [oid(2), oid(1)]


def test_a_result_nobody_wants_is_dropped_and_its_nested_borrows_given_back():
    refs, store, _, returned = counter()
    result = value([ObjectRefInfo(oid(3), OTHER)])
    assert not refs.store_value(oid(4), result)
    assert not store.contains(oid(4))
    assert returned == [(OTHER, oid(3), 1)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ref", "unref", "borrow", "unborrow", "hold",
                                           "release"]),
                          st.integers(0, 3)), max_size=60))
def test_random_operations_free_exactly_the_unreferenced_owned_objects(ops):
    """Against a model: an owned object is in the store iff something still counts."""
    refs, store, freed, _ = counter()
    model = {i: {"local": 0, "borrows": 0, "contained": 0} for i in range(4)}
    alive = set()
    expected_frees = []
    for op, i in ops:
        counts, object_id = model[i], oid(i)
        info = [ObjectRefInfo(object_id, None)]
        if op == "ref":
            refs.add_local_ref(object_id, None)
            if object_id not in alive:
                store.put(object_id, value())
                alive.add(object_id)
            counts["local"] += 1
        elif object_id not in alive:
            continue                             # only live objects can be counted
        elif op == "unref" and counts["local"]:
            refs.remove_local_ref(object_id)
            counts["local"] -= 1
        elif op == "borrow":
            assert refs.add_borrower(object_id, BORROWER)
            counts["borrows"] += 1
        elif op == "unborrow" and counts["borrows"]:
            refs.remove_borrower(object_id, BORROWER.worker_id, 1)
            counts["borrows"] -= 1
        elif op == "hold":
            refs.hold(info, registered=False)
            counts["contained"] += 1
        elif op == "release" and counts["contained"]:
            refs.release(info)
            counts["contained"] -= 1
        if object_id in alive and not any(counts.values()):
            alive.discard(object_id)
            expected_frees.append(object_id)
        for j in model:
            assert store.contains(oid(j)) == (oid(j) in alive), (op, i, j)
    assert freed == expected_frees               # each life of an object ends in one free
