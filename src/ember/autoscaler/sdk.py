"""``request_resources``: ask the autoscaler for capacity ahead of the work, as in Ray.

The request is a standing one: each call replaces the previous request, and
``request_resources()`` with no arguments (or ``num_cpus=0``) withdraws it.
The autoscaler keeps enough nodes for the request's bundles to fit the
cluster's *total* resources, whether or not they are in use, and does not
remove nodes the request needs even when they are idle.

It lives in the GCS's KV store (namespace "autoscaler"), so it outlives the
driver that made it, as in Ray, and the GCS serves it to the autoscaler
with the rest of the demand.
"""
from __future__ import annotations

import numbers

import msgspec

from ..core_worker import context
from ..protocol import gcs as gcs_msg


def request_resources(num_cpus: int | None = None,
                      bundles: list[dict[str, float]] | None = None) -> None:
    """Ask for ``num_cpus`` CPUs (as 1-CPU bundles) plus ``bundles``; replaces any earlier
    request. Needs a connected driver (``ember.init()``)."""
    requested = validate_request(num_cpus, bundles)
    core = context.core
    if core is None:
        raise RuntimeError("request_resources() needs a connected driver: call "
                           "ember.init(address=...) first.")
    core.io.run(core.gcs.call(gcs_msg.KVPut(
        gcs_msg.AUTOSCALER_KV_NAMESPACE, gcs_msg.REQUEST_RESOURCES_KEY,
        msgspec.msgpack.encode(requested))), 30)


def validate_request(num_cpus, bundles) -> list[dict[str, float]]:
    """The request as a list of bundles; ValueError names what is wrong."""
    if num_cpus is not None and (isinstance(num_cpus, bool) or
                                 not isinstance(num_cpus, numbers.Integral) or num_cpus < 0):
        raise ValueError(f"num_cpus must be a non-negative integer, got {num_cpus!r}.")
    if bundles is not None and not isinstance(bundles, list):
        raise ValueError(f"bundles must be a list of resource dicts, got {bundles!r}.")
    requested = [{"CPU": 1.0} for _ in range(num_cpus or 0)]
    for i, bundle in enumerate(bundles or []):
        if not isinstance(bundle, dict):
            raise ValueError(f"bundles[{i}] must be a dict of resource amounts, got {bundle!r}.")
        for name, amount in bundle.items():
            if not isinstance(name, str) or isinstance(amount, bool) or \
                    not isinstance(amount, numbers.Real) or amount < 0:
                raise ValueError(f"bundles[{i}][{name!r}] must be a non-negative number, "
                                 f"got {amount!r}.")
        requested.append({k: float(v) for k, v in bundle.items() if v})
    return requested
