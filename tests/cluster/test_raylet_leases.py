"""A raylet's actor leases across a GCS restart, spoken to directly over its RPC port.

The GCS leases a worker for each actor it creates. When the GCS dies, the
raylet keeps those leases (the actors live on); a restarted GCS that schedules
an actor again whose creation its previous self had begun asks for the same
lease id. It must get the same worker back: a second worker would be started
while the first held its resources for ever.
"""
from __future__ import annotations

import asyncio

import uvloop

import ember as ray
from ember import rpc
from ember.core_worker import context
from ember.protocol import raylet as rl
from ember.protocol.common import DefaultScheduling
from ember.protocol.raylet import GetNodeState
from ember.state import ask_every_raylet
from helpers import wait_for_condition


def _granted_leases() -> int:
    _, states = ask_every_raylet(context.core.gcs_address, GetNodeState())
    (state,) = states.values()
    return state.state["leases"]["granted"]


def test_actor_lease_asked_again_after_its_owner_left_gets_the_same_worker(fresh):
    fresh(num_cpus=1)
    node = ray.nodes()[0]
    address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
    core = context.core
    request = rl.RequestWorkerLease(
        lease_id=b"L" * 20, job_id=core.job_id, resources={"CPU": 1.0},
        strategy=DefaultScheduling(), description="actor Probe", owner=core.address,
        scheduling_key=b"actor:" + b"A" * 16, actor_id=b"A" * 16)

    async def ask_then_leave():
        conn = await rpc.connect(address, name="raylet")
        try:
            return await conn.call(request, timeout=30)
        finally:
            conn.close()  # as a GCS that dies: the actor lease must survive it

    first = uvloop.run(ask_then_leave())
    assert type(first) is rl.LeaseGranted
    assert _granted_leases() == 1

    async def ask_again_then_return():
        conn = await rpc.connect(address, name="raylet")
        try:
            reply = await conn.call(request, timeout=30)
            # Still one lease: the same one, granted to the new connection.
            assert await asyncio.to_thread(_granted_leases) == 1
            conn.notify(rl.ReturnWorker(reply.lease_id))
            await conn.call(GetNodeState(), timeout=10)  # handled after the return
            return reply
        finally:
            conn.close()
    again = uvloop.run(ask_again_then_return())
    assert type(again) is rl.LeaseGranted
    assert (again.worker, again.worker_pid) == (first.worker, first.worker_pid)
    # Returned now: the node's CPU is free again.
    wait_for_condition(lambda: _granted_leases() == 0, timeout=10,
                       message="the lease to be returned")
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 1.0, timeout=10,
                       message="the CPU to be free")
