"""The rest of ``ember.util``, as Ray's ``ray.util`` exports it: the placement
group functions, ``get_node_ip_address``, custom serializers and
``inspect_serializability``."""
from __future__ import annotations

import io
import threading

import pytest

import ember as ray


def test_placement_group_api_is_exported_from_util(shared):
    pg = ray.util.placement_group([{"CPU": 1}], strategy="PACK", name="util_pg")
    assert pg.wait(30)
    assert ray.util.get_placement_group("util_pg").id == pg.id
    table = ray.util.placement_group_table(pg)
    assert table["state"] == "CREATED"
    ray.util.remove_placement_group(pg)
    assert ray.util.get_current_placement_group() is None  # the driver is in none


def test_get_node_ip_address_is_the_node_of_the_process(shared):
    @ray.remote
    def ip():
        return ray.util.get_node_ip_address()
    here = ray.util.get_node_ip_address()
    assert here == ray.nodes()[0]["NodeManagerAddress"]
    assert ray.get(ip.remote()) == here


class Point:
    """Holds a lock, so it cannot be pickled as it is."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.lock = threading.Lock()


def _rebuild_point(xy):
    return Point(*xy)


def test_registered_serializer_carries_an_unpicklable_type(shared):
    @ray.remote
    def norm(p):
        return p.x * p.x + p.y * p.y, type(p.lock).__name__

    with pytest.raises(TypeError, match="pickle"):
        ray.put(Point(1, 2))
    ray.util.register_serializer(Point, serializer=lambda p: (p.x, p.y),
                                 deserializer=_rebuild_point)
    try:
        assert ray.get(norm.remote(Point(3, 4))) == (25, "lock")
        back = ray.get(ray.put(Point(5, 6)))
        assert (back.x, back.y) == (5, 6)
    finally:
        ray.util.deregister_serializer(Point)
    with pytest.raises(TypeError, match="pickle"):
        ray.put(Point(1, 2))


def test_register_serializer_rejects_bad_input():
    with pytest.raises(TypeError, match="takes a class"):
        ray.util.register_serializer(Point(1, 2), serializer=str, deserializer=str)
    with pytest.raises(TypeError, match="deserializer must be callable"):
        ray.util.register_serializer(Point, serializer=str, deserializer=3)


def test_inspect_serializability_names_the_captured_culprit():
    lock = threading.Lock()
    fine = 42

    def task():
        return fine, lock

    out = io.StringIO()
    ok, failures = ray.util.inspect_serializability(task, print_file=out)
    assert not ok
    assert [f.name for f in failures] == ["lock"]
    assert "cannot pickle 'lock'" in out.getvalue()
    assert ray.util.inspect_serializability(lambda: fine, print_file=out) == (True, set())
