"""The cluster scheduler's view (``raylet/cluster_view.py``): promises and reports."""
from ember.protocol.common import DefaultScheduling
from ember.raylet.policies import pick_node

from policy_views import busy, cpu, make_view, node_id

DEFAULT = DefaultScheduling()


def test_promise_never_drives_availability_below_zero():
    view = make_view(1, 1)
    view.promise(node_id(1), cpu(1), now=0.0)
    view.promise(node_id(1), cpu(1), now=0.0)
    assert view.nodes[node_id(1)].resources.available["CPU"] == 0
    view.promise(b"unknown", cpu(1), now=0.0)  # a node the view does not have: ignored


def test_a_promise_no_report_confirms_is_forgotten():
    """A spilled request the node never got (refused, owner gone) frees the node again."""
    view = make_view(1, 1)
    busy(view, 0, 1)
    view.promise(node_id(1), cpu(1), now=10.0)
    view.expire_promises(now=10.5, ttl=1.0)
    assert pick_node(view, cpu(1), DEFAULT).node_id == node_id(0)  # waits
    view.expire_promises(now=11.5, ttl=1.0)
    assert pick_node(view, cpu(1), DEFAULT).node_id == node_id(1)


def test_a_report_replaces_promises_and_later_expiry_keeps_it():
    view = make_view(2, 2)
    node = view.nodes[node_id(1)]
    view.promise(node_id(1), cpu(1), now=0.0)
    node.report(cpu(0.5))       # the node's own count: it took the request and more
    view.expire_promises(now=5.0, ttl=1.0)
    assert node.resources.available == cpu(0.5)
