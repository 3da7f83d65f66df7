"""Logs of a node other than the head, read through that node's raylet, and followed."""
from __future__ import annotations

import pytest

import helpers

import ember as ray
from ember.cluster_utils import Cluster
from ember.util import state
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
class Talker:
    def say(self, word: str) -> None:
        print("talker says", word, flush=True)


@pytest.fixture(scope="module")
def two_nodes():
    ray.shutdown()
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1)
        other = cluster.add_node(num_cpus=1)
        helpers.drive(cluster)
        yield cluster, other
    finally:
        ray.shutdown()
        cluster.shutdown()


def _talker_on(node):
    return Talker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node.node_id, soft=False)).remote()


def test_an_actor_log_on_another_node_is_read_and_followed(two_nodes):
    _, other = two_nodes
    talker = _talker_on(other)
    ray.get(talker.say.remote("first"))
    actor_id = talker._actor_id.hex()
    helpers.wait_for_condition(
        lambda: "talker says first" in list(state.get_log(actor_id=actor_id)), timeout=10,
        message="the actor's first line in its log")
    lines = state.get_log(actor_id=actor_id, follow=True, _interval=0.1)
    assert "talker says first" in _until(lines, "talker says first")
    ray.get(talker.say.remote("second"))
    assert _until(lines, "talker says second")[-1] == "talker says second"
    lines.close()
    files = state.list_logs(node_id=other.node_id)
    assert f"raylet-{other.node_id[:12]}.out" in files["raylet"]


def test_an_unknown_file_names_the_files_that_are_there(two_nodes):
    _, other = two_nodes
    with pytest.raises(ValueError, match=r"No log file 'nope.out' on node .*raylet"):
        list(state.get_log(node_id=other.node_id, filename="nope.out"))


def _until(lines, wanted: str) -> list[str]:
    seen = []
    for line in lines:
        seen.append(line)
        if line == wanted:
            return seen
    raise AssertionError(f"the log ended without {wanted!r}: {seen[-5:]}")
