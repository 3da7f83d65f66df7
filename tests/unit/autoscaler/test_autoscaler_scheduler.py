"""The autoscaler's decision, ``plan(demand, nodes, config)``, with no processes.

Each test builds the inputs by hand (nodes as the monitor would see them,
demand as the GCS aggregates it) and checks one rule a user relies on.
"""
from ember.autoscaler.config import validate_config
from ember.autoscaler.node_status import NodeStatus
from ember.autoscaler.scheduler import Demand, NodeState, plan
from ember.protocol.gcs import PlacementGroupDemand, ResourceDemand


def make_config(max_workers=10, upscaling_speed=100.0, idle_minutes=1.0, **types):
    node_types = {"head": {"resources": {"CPU": 1}, "max_workers": 0}}
    node_types.update(types or {"cpu4": {"resources": {"CPU": 4}, "max_workers": 10}})
    return validate_config({"max_workers": max_workers, "upscaling_speed": upscaling_speed,
                            "idle_timeout_minutes": idle_minutes,
                            "provider": {"type": "local"}, "head_node_type": "head",
                            "available_node_types": node_types})


def head(cpus=1.0, available=None):
    total = {"CPU": cpus}
    return NodeState("head", None, total, dict(available if available is not None else total),
                     is_head=True)


def worker(node_id, node_type="cpu4", total=None, available=None, idle_s=0.0,
           status=NodeStatus.RUNNING):
    total = total or {"CPU": 4.0}
    return NodeState(node_id, node_type, total,
                     dict(available if available is not None else total), status, idle_s)


def tasks(shape, count, infeasible=False):
    return ResourceDemand(shape, count, infeasible)


# --- scale-up for tasks --------------------------------------------------------------

def test_no_demand_launches_nothing():
    assert plan(Demand(), [head()], make_config()).launch == {}


def test_tasks_are_packed_onto_as_few_nodes_as_fit():
    decision = plan(Demand([tasks({"CPU": 1}, 6)]), [head(available={"CPU": 0})],
                    make_config())
    assert decision.launch == {"cpu4": 2}


def test_demand_that_fits_free_capacity_launches_nothing():
    nodes = [head(), worker("w1", available={"CPU": 3})]
    assert plan(Demand([tasks({"CPU": 1}, 4)]), nodes, make_config()).launch == {}


def test_launching_nodes_count_as_capacity():
    nodes = [head(available={"CPU": 0}), worker("w1", status=NodeStatus.LAUNCHING)]
    assert plan(Demand([tasks({"CPU": 1}, 4)]), nodes, make_config()).launch == {}


def test_the_type_that_fits_is_chosen():
    config = make_config(cpu2={"resources": {"CPU": 2}}, gpu={"resources": {"CPU": 2, "GPU": 1}})
    decision = plan(Demand([tasks({"GPU": 1}, 1)]), [head()], config)
    assert decision.launch == {"gpu": 1}


def test_a_cpu_task_does_not_launch_a_gpu_node():
    config = make_config(cpu4={"resources": {"CPU": 4}},
                         gpu4={"resources": {"CPU": 4, "GPU": 1}})
    decision = plan(Demand([tasks({"CPU": 4}, 1)]), [head(available={"CPU": 0})], config)
    assert decision.launch == {"cpu4": 1}


def test_the_type_holding_most_of_the_demand_is_chosen():
    config = make_config(small={"resources": {"CPU": 1}}, big={"resources": {"CPU": 8}})
    assert plan(Demand([tasks({"CPU": 1}, 8)]), [head(available={})], config).launch == \
        {"big": 1}
    assert plan(Demand([tasks({"CPU": 1}, 1)]), [head(available={})], config).launch == \
        {"small": 1}


def test_custom_resources_choose_the_type():
    config = make_config(plain={"resources": {"CPU": 4}},
                         special={"resources": {"CPU": 2, "accel": 2}})
    decision = plan(Demand([tasks({"CPU": 1, "accel": 1}, 3)]), [head()], config)
    assert decision.launch == {"special": 2}


# --- limits ----------------------------------------------------------------------------

def test_type_max_workers_caps_launches_and_reports_unmet():
    config = make_config(cpu4={"resources": {"CPU": 4}, "max_workers": 2})
    decision = plan(Demand([tasks({"CPU": 4}, 5)]), [head()], config)
    assert decision.launch == {"cpu4": 2}
    assert decision.unmet == [{"CPU": 4}] * 3


def test_existing_nodes_count_against_type_max_workers():
    config = make_config(cpu4={"resources": {"CPU": 4}, "max_workers": 2})
    nodes = [head(), worker("w1", available={"CPU": 0})]
    assert plan(Demand([tasks({"CPU": 4}, 5)]), nodes, config).launch == {"cpu4": 1}


def test_global_max_workers_caps_all_types():
    config = make_config(max_workers=3, a={"resources": {"A": 1}}, b={"resources": {"B": 1}})
    decision = plan(Demand([tasks({"A": 1}, 2), tasks({"B": 1}, 2)]), [head()], config)
    assert sum(decision.launch.values()) == 3
    assert len(decision.unmet) == 1


def test_upscaling_speed_limits_pending_launches():
    config = make_config(upscaling_speed=1.0)
    decision = plan(Demand([tasks({"CPU": 4}, 9)]), [head()], config)
    assert decision.launch == {"cpu4": 5}  # max(5, 1.0 * 1 running node)
    nodes = [head()] + [worker(f"w{i}", available={"CPU": 0}) for i in range(7)]
    decision = plan(Demand([tasks({"CPU": 4}, 9)]), nodes, make_config(upscaling_speed=1.0))
    assert decision.launch == {"cpu4": 3}  # the type's max_workers (10) binds first
    nodes = [head()] + [worker(f"w{i}", status=NodeStatus.LAUNCHING) for i in range(4)]
    decision = plan(Demand([tasks({"CPU": 4}, 9)]), nodes, config)
    assert decision.launch == {"cpu4": 1}  # 4 already pending of the 5 allowed


def test_upscaling_speed_scales_with_running_nodes():
    config = make_config(max_workers=100, upscaling_speed=2.0,
                         cpu4={"resources": {"CPU": 4}, "max_workers": 100})
    nodes = [head()] + [worker(f"w{i}", available={"CPU": 0}) for i in range(5)]
    decision = plan(Demand([tasks({"CPU": 4}, 50)]), nodes, config)
    assert decision.launch == {"cpu4": 12}  # 2.0 * 6 running


# --- infeasible demand -----------------------------------------------------------------

def test_demand_no_type_can_hold_is_infeasible_and_launches_nothing():
    decision = plan(Demand([tasks({"CPU": 64}, 3, infeasible=True)]), [head()], make_config())
    assert decision.launch == {}
    assert decision.infeasible == [{"CPU": 64}] * 3


def test_demand_that_fits_an_existing_node_waits_without_launching():
    config = make_config(cpu1={"resources": {"CPU": 1}})
    nodes = [head(cpus=8, available={"CPU": 0})]
    decision = plan(Demand([tasks({"CPU": 8}, 1)]), nodes, config)
    assert decision.launch == {} and decision.infeasible == []


# --- placement groups ------------------------------------------------------------------

def pg(strategy, *bundles):
    return PlacementGroupDemand(b"pg", [dict(b) for b in bundles], strategy)


def test_strict_spread_needs_one_node_per_bundle():
    demand = Demand(placement_groups=[pg("STRICT_SPREAD", {"CPU": 1}, {"CPU": 1}, {"CPU": 1})])
    assert plan(demand, [head()], make_config()).launch == {"cpu4": 2}  # head takes one


def test_strict_spread_over_free_workers():
    nodes = [head(available={}), worker("w1")]
    demand = Demand(placement_groups=[pg("STRICT_SPREAD", {"CPU": 1}, {"CPU": 1})])
    assert plan(demand, nodes, make_config()).launch == {"cpu4": 1}


def test_pack_puts_the_bundles_on_one_node():
    demand = Demand(placement_groups=[pg("PACK", {"CPU": 2}, {"CPU": 2})])
    assert plan(demand, [head(available={})], make_config()).launch == {"cpu4": 1}


def test_pack_too_big_for_one_node_spreads_its_bundles():
    demand = Demand(placement_groups=[pg("PACK", {"CPU": 3}, {"CPU": 3})])
    assert plan(demand, [head(available={})], make_config()).launch == {"cpu4": 2}


def test_strict_pack_too_big_for_any_type_is_infeasible():
    demand = Demand(placement_groups=[pg("STRICT_PACK", {"CPU": 3}, {"CPU": 3})])
    decision = plan(demand, [head(available={})], make_config())
    assert decision.launch == {} and decision.infeasible == [{"CPU": 6}]


def test_spread_bundles_fill_nodes():
    demand = Demand(placement_groups=[pg("SPREAD", *[{"CPU": 1}] * 5)])
    assert plan(demand, [head(available={})], make_config()).launch == {"cpu4": 2}


# --- request_resources -----------------------------------------------------------------

def test_request_resources_counts_totals_not_availability():
    nodes = [head(available={}), worker("w1", available={"CPU": 0})]
    demand = Demand(requested=[{"CPU": 1}] * 5)  # 1 + 4 CPUs exist, busy or not
    assert plan(demand, nodes, make_config()).launch == {}
    demand = Demand(requested=[{"CPU": 1}] * 9)
    assert plan(demand, nodes, make_config()).launch == {"cpu4": 1}


def test_nodes_launched_for_a_request_take_pending_work_too():
    demand = Demand([tasks({"CPU": 1}, 4)], requested=[{"CPU": 4}])
    assert plan(demand, [head(available={})], make_config()).launch == {"cpu4": 1}


def test_request_keeps_idle_nodes():
    nodes = [head(), worker("w1", idle_s=600)]
    demand = Demand(requested=[{"CPU": 4}])
    assert plan(demand, nodes, make_config()).terminate == []
    assert plan(Demand(), nodes, make_config()).terminate == ["w1"]


# --- min_workers -----------------------------------------------------------------------

def test_min_workers_are_launched_without_demand():
    config = make_config(cpu4={"resources": {"CPU": 4}, "min_workers": 2})
    assert plan(Demand(), [head()], config).launch == {"cpu4": 2}


def test_min_workers_capacity_serves_demand():
    config = make_config(cpu4={"resources": {"CPU": 4}, "min_workers": 1})
    decision = plan(Demand([tasks({"CPU": 1}, 4)]), [head(available={})], config)
    assert decision.launch == {"cpu4": 1}


# --- scale-down ------------------------------------------------------------------------

def test_idle_past_timeout_is_removed_busy_or_recent_is_kept():
    nodes = [head(), worker("old", idle_s=61), worker("recent", idle_s=30),
             worker("busy", available={"CPU": 0})]
    assert plan(Demand(), nodes, make_config(idle_minutes=1)).terminate == ["old"]


def test_head_is_never_removed():
    nodes = [NodeState("head", "head", {"CPU": 1}, {"CPU": 1}, idle_s=10_000, is_head=True)]
    assert plan(Demand(), nodes, make_config(idle_minutes=0)).terminate == []


def test_min_workers_are_kept_when_idle():
    config = make_config(cpu4={"resources": {"CPU": 4}, "min_workers": 1}, idle_minutes=1)
    nodes = [head(), worker("a", idle_s=100), worker("b", idle_s=200)]
    assert plan(Demand(), nodes, config).terminate == ["b"]


def test_nodes_not_launched_by_the_autoscaler_are_kept():
    nodes = [head(), worker("manual", node_type=None, idle_s=1000)]
    assert plan(Demand(), nodes, make_config()).terminate == []


def test_an_idle_node_that_demand_fits_is_kept():
    nodes = [head(available={}), worker("w1", idle_s=1000)]
    decision = plan(Demand([tasks({"CPU": 2}, 1)]), nodes, make_config())
    assert decision.terminate == [] and decision.launch == {}


def test_draining_nodes_offer_no_capacity():
    nodes = [head(available={}), worker("w1", status=NodeStatus.DRAINING)]
    assert plan(Demand([tasks({"CPU": 1}, 1)]), nodes, make_config()).launch == {"cpu4": 1}
