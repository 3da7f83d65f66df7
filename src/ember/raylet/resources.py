"""Resource accounting for one node, in fixed point.

Resources are counted in units of 1/10000, as in Ray, so that ten tasks of
``num_cpus=0.1`` add up to exactly one CPU; floats would leave 0.9999999 behind
and starve the eleventh task.

GPUs (and any resource named in ``INSTANCE_RESOURCES``) are also tracked per
instance, because a task must learn *which* devices it holds to set
``CUDA_VISIBLE_DEVICES``. A request of one or more GPUs must be whole and takes
whole devices; a fractional request shares one device with others.

This module does no I/O; the lease manager calls it.
"""
from __future__ import annotations

import dataclasses

UNIT = 10000
INSTANCE_RESOURCES = ("GPU",)


def to_fixed(value: float) -> int:
    return int(round(value * UNIT))


def to_float(value: int) -> float:
    return value / UNIT


@dataclasses.dataclass
class Allocation:
    """What one lease holds; given back whole by :meth:`NodeResources.release`."""

    amounts: dict[str, int]
    #: resource name -> list of (instance index, fixed-point amount)
    instances: dict[str, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)

    def instance_ids(self, name: str = "GPU") -> list[int]:
        return [i for i, _ in self.instances.get(name, [])]


class NodeResources:
    """Total and available resources of one node."""

    def __init__(self, total: dict[str, float]):
        self.total = {k: to_fixed(v) for k, v in total.items() if v > 0}
        self.available = dict(self.total)
        self.instances = {
            name: [UNIT] * (self.total[name] // UNIT)
            for name in INSTANCE_RESOURCES if name in self.total
        }

    def is_feasible(self, request: dict[str, int]) -> bool:
        """Could this node ever run the request, with everything free?"""
        for name, amount in request.items():
            if amount and self.total.get(name, 0) < amount:
                return False
        return True

    def missing(self, request: dict[str, int]) -> dict[str, float]:
        """The part of ``request`` this node lacks even when idle."""
        return {name: to_float(amount - self.total.get(name, 0))
                for name, amount in request.items()
                if amount and self.total.get(name, 0) < amount}

    def can_allocate(self, request: dict[str, int]) -> bool:
        for name, amount in request.items():
            if amount and self.available.get(name, 0) < amount:
                return False
            if amount and name in self.instances and self._pick(name, amount) is None:
                return False
        return True

    def allocate(self, request: dict[str, int]) -> Allocation | None:
        if not self.can_allocate(request):
            return None
        alloc = Allocation(amounts={k: v for k, v in request.items() if v})
        for name, amount in alloc.amounts.items():
            self.available[name] -= amount
            if name in self.instances:
                picked = self._pick(name, amount)
                for index, share in picked:
                    self.instances[name][index] -= share
                alloc.instances[name] = picked
        return alloc

    def take(self, request: dict[str, int]) -> None:
        """Lower what is available by ``request`` (never below zero), holding no instances.

        For a view of another node: what this node just sent there is not yet in
        that node's report.
        """
        for name, amount in request.items():
            if amount and name in self.available:
                self.available[name] = max(0, self.available[name] - amount)

    def release(self, alloc: Allocation) -> None:
        for name, amount in alloc.amounts.items():
            if name in self.total:  # a removed placement group's resources are gone
                self.available[name] = self.available.get(name, 0) + amount
        for name, picked in alloc.instances.items():
            for index, share in picked:
                self.instances[name][index] += share
        alloc.amounts = {}
        alloc.instances = {}

    def _pick(self, name: str, amount: int):
        free = self.instances[name]
        if amount >= UNIT:
            whole = [i for i, avail in enumerate(free) if avail == UNIT]
            need = amount // UNIT
            return [(i, UNIT) for i in whole[:need]] if len(whole) >= need else None
        # Fractional: share the fullest device that still fits, to keep others whole.
        fits = [i for i, avail in enumerate(free) if avail >= amount]
        if not fits:
            return None
        return [(min(fits, key=lambda i: free[i]), amount)]

    def shrink(self, alloc: Allocation, keep: dict[str, int]) -> None:
        """Give back what ``alloc`` holds beyond ``keep`` (instance resources excepted)."""
        for name, amount in list(alloc.amounts.items()):
            if name in alloc.instances:
                continue
            surplus = amount - keep.get(name, 0)
            if surplus > 0:
                self.available[name] = self.available.get(name, 0) + surplus
                alloc.amounts[name] = amount - surplus
                if not alloc.amounts[name]:
                    del alloc.amounts[name]

    def lend(self, alloc: Allocation, name: str = "CPU") -> int:
        """A blocked worker lends its ``name`` back; returns the amount lent."""
        amount = alloc.amounts.get(name, 0)
        self.available[name] = self.available.get(name, 0) + amount
        return amount

    def reclaim(self, amount: int, name: str = "CPU") -> None:
        """Take back a lent amount, even if that oversubscribes for a while."""
        self.available[name] = self.available.get(name, 0) - amount

    def utilization(self) -> float:
        """The highest used fraction among the node's resources."""
        used = [1 - self.available.get(k, 0) / v for k, v in self.total.items() if v]
        return max(used, default=0.0)

    def as_floats(self, which: str = "available") -> dict[str, float]:
        values = self.available if which == "available" else self.total
        return {k: to_float(v) for k, v in values.items()}


def fixed_request(resources: dict[str, float]) -> dict[str, int]:
    return {k: to_fixed(v) for k, v in resources.items() if v}
