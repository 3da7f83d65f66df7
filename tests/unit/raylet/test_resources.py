"""Resource arithmetic of one node: fixed point, GPU instances, lending, shrinking."""
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.raylet.resources import NodeResources, fixed_request


def test_ten_tenths_of_a_cpu_fill_exactly_one_cpu():
    node = NodeResources({"CPU": 1})
    allocs = [node.allocate(fixed_request({"CPU": 0.1})) for _ in range(10)]
    assert all(a is not None for a in allocs)
    assert node.allocate(fixed_request({"CPU": 0.1})) is None
    for a in allocs:
        node.release(a)
    assert node.as_floats() == {"CPU": 1.0}


def test_whole_gpus_are_distinct_devices_and_fractions_share_the_fullest_one():
    node = NodeResources({"GPU": 2})
    first = node.allocate(fixed_request({"GPU": 0.5}))
    second = node.allocate(fixed_request({"GPU": 0.25}))
    assert first.instance_ids() == second.instance_ids()   # packed on one device
    whole = node.allocate(fixed_request({"GPU": 1}))
    assert whole.instance_ids() != first.instance_ids()
    assert node.allocate(fixed_request({"GPU": 1})) is None  # no whole device left
    for a in (first, second, whole):
        node.release(a)
    assert node.allocate(fixed_request({"GPU": 2})).instance_ids() == [0, 1]


def test_a_request_the_node_cannot_ever_hold_is_infeasible_and_says_what_is_missing():
    node = NodeResources({"CPU": 2})
    request = fixed_request({"CPU": 4, "custom": 1})
    assert not node.is_feasible(request)
    assert node.missing(request) == {"CPU": 2.0, "custom": 1.0}


def test_a_blocked_worker_lends_its_cpu_and_takes_it_back():
    node = NodeResources({"CPU": 1})
    alloc = node.allocate(fixed_request({"CPU": 1}))
    lent = node.lend(alloc)
    assert node.can_allocate(fixed_request({"CPU": 1}))
    nested = node.allocate(fixed_request({"CPU": 1}))
    node.reclaim(lent)                       # oversubscribed for a while
    assert node.as_floats()["CPU"] == -1.0
    node.release(nested)
    node.release(alloc)
    assert node.as_floats()["CPU"] == 1.0


def test_an_actor_placed_with_one_cpu_keeps_none_while_it_runs():
    node = NodeResources({"CPU": 1})
    alloc = node.allocate(fixed_request({"CPU": 1}))
    node.shrink(alloc, {})
    assert node.as_floats()["CPU"] == 1.0
    node.release(alloc)
    assert node.as_floats()["CPU"] == 1.0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.1, 0.25, 0.5, 1, 2]),
                          st.sampled_from(["CPU", "GPU"])), max_size=40))
def test_allocations_never_exceed_the_total_and_releases_restore_it(steps):
    node = NodeResources({"CPU": 4, "GPU": 2})
    held = []
    for allocate, amount, name in steps:
        if allocate:
            alloc = node.allocate(fixed_request({name: amount}))
            if alloc is not None:
                held.append(alloc)
        elif held:
            node.release(held.pop(0))
        for key, avail in node.available.items():
            assert 0 <= avail <= node.total[key]
        assert all(0 <= share <= 10000 for share in node.instances["GPU"])
    for alloc in held:
        node.release(alloc)
    assert node.as_floats() == {"CPU": 4.0, "GPU": 2.0}
    assert node.instances["GPU"] == [10000, 10000]
