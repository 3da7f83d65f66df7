"""Placement groups, as ``ray.util.placement_group``: reserve bundles of resources.

A placement group reserves a list of resource bundles across the cluster,
atomically and with a placement strategy, and tasks and actors can then be
scheduled into its bundles with ``PlacementGroupSchedulingStrategy``.
Reservation is done by the GCS (two-phase, see gcs/placement_group_manager.py);
scheduling into a group is ordinary resource scheduling on the resources the
group's bundles create (``CPU_group_<index>_<id>``), which the owner of a task
asks for instead of plain ``CPU``.
"""
from __future__ import annotations

import os

from .core_worker import context
from .ids import PLACEMENT_GROUP_ID_SIZE, PlacementGroupID
from .protocol import gcs as gcs_msg
from . import rpc
from .core_worker.serialization import serialize, serialize_error
from .exceptions import TaskPlacementGroupRemoved
from .object_ref import ObjectRef

VALID_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
#: Ray's name for it (``ray.util.placement_group.VALID_PLACEMENT_GROUP_STRATEGIES``).
VALID_PLACEMENT_GROUP_STRATEGIES = VALID_STRATEGIES


class PlacementGroup:
    """A handle to a placement group; picklable, so tasks can use it too."""

    def __init__(self, id: PlacementGroupID, bundle_cache: list[dict] | None = None):
        self.id = id
        self.bundle_cache = bundle_cache

    @property
    def bundle_specs(self) -> list[dict]:
        if self.bundle_cache is None:
            info = _info(self.id.binary())
            self.bundle_cache = [dict(b) for b in info.bundles] if info else []
        return self.bundle_cache

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self):
        """An ObjectRef that resolves (to this group) once the group is created."""
        core = context.require_core("PlacementGroup.ready()")
        object_id = core.ids.task_id() + b"\xfe\xff\xff\xff"
        ref = ObjectRef(object_id, core.address)

        async def wait():
            reply = await core.gcs.call(gcs_msg.WaitPlacementGroupReady(self.id.binary()))
            if reply.state == "CREATED":
                value = serialize(self)
            else:
                value = serialize_error(TaskPlacementGroupRemoved(
                    f"Placement group {self.id.hex()} was removed before it was created."))
            core.references.store_value(object_id, value)
        core.io.post(lambda: core.io.loop.create_task(wait()))
        return ref

    def wait(self, timeout_seconds: float | None = 30) -> bool:
        """Block until the group is created (True) or ``timeout_seconds`` pass (False)."""
        core = context.require_core("PlacementGroup.wait()")
        reply = core.io.run(core.gcs.call(gcs_msg.WaitPlacementGroupReady(
            self.id.binary(), timeout_seconds)))
        return reply.state == "CREATED"

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"PlacementGroup({self.id.hex()})"


def _info(pg_id: bytes = b"", name: str = "", namespace: str = ""):
    core = context.require_core("placement groups")
    return core.io.run(core.gcs.call(gcs_msg.GetPlacementGroup(pg_id, name, namespace)),
                       timeout=30).info


def placement_group(bundles: list[dict], strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None, _max_cpu_fraction_per_node: float = 1.0,
                    _soft_target_node_id: str | None = None,
                    bundle_label_selector=None) -> PlacementGroup:
    """Reserve ``bundles`` with ``strategy``; returns at once (see ``ready()``)."""
    core = context.require_core("placement_group()")
    if not isinstance(bundles, list) or not bundles:
        raise ValueError(f"placement_group(): 'bundles' must be a non-empty list of resource "
                         f"dicts, got {bundles!r}.")
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, dict) or not bundle:
            raise ValueError(f"placement_group(): bundle {i} must be a non-empty dict of "
                             f"resources, got {bundle!r}.")
        for key, amount in bundle.items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                raise ValueError(f"placement_group(): bundle {i} resource {key!r} must be a "
                                 f"non-negative number, got {amount!r}.")
        if all(v == 0 for v in bundle.values()):
            raise ValueError(f"placement_group(): bundle {i} {bundle} reserves nothing; "
                             "every bundle needs a positive amount of some resource.")
    if strategy not in VALID_STRATEGIES:
        raise ValueError(f"placement_group(): strategy {strategy!r} is not one of "
                         f"{list(VALID_STRATEGIES)}.")
    if lifetime not in (None, "detached"):
        raise ValueError(f"placement_group(): lifetime must be None or 'detached', got "
                         f"{lifetime!r}.")
    if not isinstance(name, str):
        raise TypeError(f"placement_group(): name must be a str, got {type(name).__name__}.")
    pg_id = os.urandom(PLACEMENT_GROUP_ID_SIZE - 4) + core.job_id
    info = gcs_msg.PlacementGroupInfo(
        placement_group_id=pg_id, name=name, namespace=core.namespace,
        bundles=[{k: float(v) for k, v in b.items()} for b in bundles], strategy=strategy,
        state="PENDING", job_id=core.job_id, is_detached=lifetime == "detached",
        creator=core.address)
    try:
        core.io.run(core.gcs.call(gcs_msg.CreatePlacementGroup(info)), timeout=30)
    except rpc.RemoteError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return PlacementGroup(PlacementGroupID(pg_id), [dict(b) for b in bundles])


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Remove the group: its bundles are freed and the tasks and actors in it killed."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got "
                        f"{type(placement_group).__name__}.")
    core = context.require_core("remove_placement_group()")
    core.io.run(core.gcs.call(gcs_msg.RemovePlacementGroup(placement_group.id.binary())),
                timeout=30)


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live placement group named ``placement_group_name`` in this namespace."""
    core = context.require_core("get_placement_group()")
    info = _info(name=placement_group_name, namespace=core.namespace)
    if info is None or info.state == "REMOVED":
        raise ValueError(f"Failed to look up placement group with name "
                         f"{placement_group_name!r} in namespace {core.namespace!r}.")
    return PlacementGroup(PlacementGroupID(info.placement_group_id),
                          [dict(b) for b in info.bundles])


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """Ray's table: one dict per group with its bundles, nodes, strategy and state."""
    core = context.require_core("placement_group_table()")
    reply = core.io.run(core.gcs.call(gcs_msg.GetAllPlacementGroups()), timeout=30)

    def row(info):
        return {"placement_group_id": info.placement_group_id.hex(), "name": info.name,
                "bundles": {i: dict(b) for i, b in enumerate(info.bundles)},
                "bundles_to_node_id": {i: n.hex() for i, n in enumerate(info.bundle_nodes)
                                       if n},
                "strategy": info.strategy, "state": info.state,
                "is_detached": info.is_detached, "stats": {"message": info.message}}
    if placement_group is not None:
        for info in reply.groups:
            if info.placement_group_id == placement_group.id.binary():
                return row(info)
        return {}
    return {info.placement_group_id.hex(): row(info) for info in reply.groups}


def get_current_placement_group() -> PlacementGroup | None:
    """The group the current task or actor runs in, if it captures child tasks."""
    core = context.core
    if core is None:
        return None
    spec = getattr(core.task_context, "spec", None)
    pg_id = getattr(spec, "placement_group_id", b"") if spec is not None else b""
    if not pg_id:
        pg_id = getattr(core, "actor_placement_group_id", b"")
    return PlacementGroup(PlacementGroupID(pg_id)) if pg_id else None


def group_resources(resources: dict[str, float], pg_id: bytes,
                    bundle_index: int) -> dict[str, float]:
    """A request rewritten into the resources of a placement group's bundle(s)."""
    pg_hex = pg_id.hex()
    out = {}
    for name, amount in resources.items():
        if amount:
            out[f"{name}_group_{bundle_index}_{pg_hex}" if bundle_index >= 0
                else f"{name}_group_{pg_hex}"] = amount
    bundle = f"bundle_group_{bundle_index}_{pg_hex}" if bundle_index >= 0 \
        else f"bundle_group_{pg_hex}"
    out[bundle] = 0.001
    return out


def ungroup_resources(resources: dict[str, float], pg_id: bytes) -> dict[str, float]:
    """The inverse of :func:`group_resources`: what the task asked for, by Ray's names
    (``get_assigned_resources()`` inside a placement group shows ``{"CPU": 1}``)."""
    suffix = "_" + pg_id.hex()
    out: dict[str, float] = {}
    for name, amount in resources.items():
        if not name.endswith(suffix):
            out[name] = amount
            continue
        base, _, index = name[:-len(suffix)].rpartition("_group")
        if index and not index.lstrip("_").isdigit():
            out[name] = amount  # not one of the group's names after all
        elif base != "bundle":
            out[base] = out.get(base, 0) + amount
    return out
