"""A real GCS with 100 simulated raylets (ember.util.sim_cluster): the scale test's small form.

benchmarks/thousand_nodes.py runs the same at 1,000 nodes and measures it;
this checks that behaviour stays right with many nodes: every node registers,
placement groups and actors spread over them and become ready, and nodes that
die at once (10 crashed, 5 hung) are all declared dead, their actors restarted
or dead as their max_restarts say and their groups placed again.
"""
from __future__ import annotations

import os

import pytest

from ember.rpc import auth
from ember.util.sim_cluster import SimDriver, SimProcess, start_gcs
from helpers import wait_for_condition

NODES_PER_PROCESS = 50


@pytest.fixture
def sim_cluster(temp_root):
    log_dir = os.path.join(temp_root, "sim_nodes")
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ, EMBER_AUTH_TOKEN=auth.current_token().decode(),
               EMBER_HEALTH_CHECK_TIMEOUT_S="3")
    gcs, address = start_gcs(log_dir, env)
    sims, driver = [], None
    try:
        sims = [SimProcess(address, {"CPU": 4.0}, report_period_s=1.0, env=env)
                for _ in range(2)]
        driver = SimDriver(address)
        yield gcs, sims, driver, log_dir
    finally:
        if driver is not None:
            driver.close()
        for sim in sims:
            sim.close()
        gcs.terminate()
        gcs.wait(10)


@pytest.mark.timeout(120)
def test_a_hundred_simulated_nodes(sim_cluster):
    gcs, sims, driver, log_dir = sim_cluster
    for sim in sims:
        sim.send(f"add {NODES_PER_PROCESS}")
    for sim in sims:
        assert sim.answer()["added"] == NODES_PER_PROCESS
    wait_for_condition(lambda: len(driver.alive_nodes()) == 100, 30,
                       message="100 nodes registered")
    nodes = driver.alive_nodes()

    # 100 groups of two 1-CPU bundles: two groups fill a 4-CPU node.
    driver.create_placement_groups(100, [{"CPU": 1.0}, {"CPU": 1.0}], "PACK")
    groups = driver.placement_groups()
    assert [g.state for g in groups] == ["CREATED"] * 100
    per_node: dict[bytes, int] = {}
    for g in groups:
        assert g.bundle_nodes[0] == g.bundle_nodes[1]  # PACK: both on one node
        per_node[g.bundle_nodes[0]] = per_node.get(g.bundle_nodes[0], 0) + 2
    assert max(per_node.values()) <= 4
    assert sum(s.command("stats")["bundles"] for s in sims) == 200

    # 500 actors owned from every node: 400 may restart once, 100 may not.
    restartable = driver.create_actors(400, nodes, max_restarts=1)
    once = driver.create_actors(100, nodes, max_restarts=0)
    everyone = restartable + once
    try:
        wait_for_condition(lambda: driver.actor_states(everyone) == {"ALIVE": 500}, 60,
                           message="500 actors ALIVE")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; heard {driver.actor_states(everyone)}, the GCS has "
                             f"{driver.gcs_actor_states(everyone)}, the nodes "
                             f"{[s.command('stats') for s in sims]}") from None
    # Every node not filled by two groups took actors (placing one needs a free CPU).
    full = {n for n, cpus in per_node.items() if cpus == 4}
    hosts = {driver.actors[a].node_id for a in everyone}
    assert not hosts & full and len(hosts) == 100 - len(full)
    assert sum(s.command("stats")["creations"] for s in sims) == 500

    # 10 nodes crash at once.
    crashed = {bytes.fromhex(h) for h in sims[0].command("crash 10")["node_ids"]}
    wait_for_condition(
        lambda: not crashed & {n.node_id for n in driver.alive_nodes()}, 30,
        message="the 10 crashed nodes declared dead")
    assert len(driver.alive_nodes()) == 90
    lost = [a for a in everyone if driver.actors[a].node_id in crashed]
    assert lost
    lost_once = [a for a in lost if a in once]

    def settled():
        infos = [driver.actors[a] for a in everyone]
        return all(i.state == ("DEAD" if i.actor_id in lost_once else "ALIVE")
                   for i in infos)
    wait_for_condition(settled, 60, message="actors of crashed nodes restarted or dead")
    for actor_id in lost:
        info = driver.actors[actor_id]
        assert info.node_id not in crashed or info.state == "DEAD"
        if actor_id in lost_once:
            assert "the node it ran on" in info.death_cause
        else:
            assert info.num_restarts == 1
    wait_for_condition(
        lambda: all(g.state == "CREATED" and not crashed & set(g.bundle_nodes)
                    for g in driver.placement_groups()), 30,
        message="groups of crashed nodes placed again")

    # 5 nodes hang: only the health check finds them (timeout 3 s here).
    hung = {bytes.fromhex(h) for h in sims[1].command("hang 5")["node_ids"]}
    before = {a: (driver.actors[a].node_id, driver.actors[a].num_restarts,
                  driver.actors[a].state) for a in everyone}
    wait_for_condition(lambda: not hung & {n.node_id for n in driver.alive_nodes()}, 30,
                       message="the 5 hung nodes declared dead")
    assert len(driver.alive_nodes()) == 85

    def expected(actor_id) -> str:
        node_id, restarts, state = before[actor_id]
        if state == "DEAD" or (node_id in hung and restarts >= (actor_id in restartable)):
            return "DEAD"
        return "ALIVE"
    wait_for_condition(lambda: all(driver.actors[a].state == expected(a) for a in everyone),
                       60, message="actors of hung nodes restarted or dead")
    assert any(before[a][0] in hung for a in everyone)

    assert gcs.poll() is None
    with open(os.path.join(log_dir, "gcs.log")) as f:
        assert "Traceback" not in f.read()
