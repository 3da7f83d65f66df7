"""Scheduling policies: one module per scheduling strategy, behind one interface.

Three places decide where work goes, and all three ask the policy of the
request's strategy, so that a strategy's rules are written once:

- the raylet's cluster lease manager picks a node for each lease request
  (:func:`pick_node`);
- an owner asks first the raylet of the node that holds a task's large
  arguments, when the strategy lets data decide (:func:`follows_data`);
- the GCS sends an actor's lease request first to the node the strategy
  names, if any, else to the owner's node (:func:`named_node`).

A policy is a module with the members of :class:`SchedulingPolicy`, one per
wire strategy (``ember.protocol.common.SchedulingStrategy``, a tagged union):
``hybrid`` (DEFAULT), ``spread``, ``node_affinity``, ``node_label`` and
``placement_group``. The modules are found here, not listed: every module of
this package that has a ``STRATEGY`` serves that struct. Adding a strategy
therefore takes its struct in the union and its module here, nothing else;
this package refuses to import if a member of the union has no policy or two.

The home is ``raylet/`` because the policies decide over the raylet's cluster
view and resource arithmetic (:mod:`..cluster_view`, :mod:`..resources`), as
Ray's ``raylet/scheduling/policy/``; the GCS and the core worker already use
the raylet's lease client for the same reason.

Pure functions of their arguments (the view's rng and SPREAD turn aside), so
``tests/unit/raylet/`` tests each policy exhaustively without processes.
"""
from __future__ import annotations

import importlib
import pkgutil
import typing

from ...protocol.common import SchedulingStrategy
from ..cluster_view import ClusterView, Decision


class SchedulingPolicy(typing.Protocol):
    """What each policy module provides (modules satisfy it structurally)."""

    #: The wire strategy (a member of ``SchedulingStrategy``) this policy serves.
    STRATEGY: type
    #: Whether an owner may first ask the raylet of the node holding the task's
    #: arguments (locality); False for strategies whose node is chosen otherwise.
    FOLLOWS_DATA: bool

    def pick(self, view: ClusterView, request: dict[str, int],
             strategy: SchedulingStrategy) -> Decision:
        """The node for a request of ``request`` (fixed-point) resources."""

    def named_node(self, strategy: SchedulingStrategy) -> bytes | None:
        """The node the strategy itself names (whose raylet to ask first), or None."""


def _discover() -> dict[type, SchedulingPolicy]:
    policies: dict[type, SchedulingPolicy] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        strategy = getattr(module, "STRATEGY", None)
        if strategy is None:
            continue
        if strategy in policies:
            raise ImportError(f"two scheduling policies serve {strategy.__name__}: "
                              f"{policies[strategy].__name__} and {module.__name__}")
        policies[strategy] = typing.cast(SchedulingPolicy, module)
    missing = [s.__name__ for s in typing.get_args(SchedulingStrategy) if s not in policies]
    if missing:
        raise ImportError(f"no scheduling policy serves {', '.join(missing)}: add a module "
                          f"with STRATEGY = <the struct> to {__name__}")
    return policies


#: Strategy struct type -> its policy module.
POLICIES: dict[type, SchedulingPolicy] = _discover()


def policy_for(strategy: SchedulingStrategy) -> SchedulingPolicy:
    return POLICIES[type(strategy)]


def pick_node(view: ClusterView, request: dict[str, int],
              strategy: SchedulingStrategy) -> Decision:
    """Where the raylet should run a request: the strategy's policy decides."""
    return POLICIES[type(strategy)].pick(view, request, strategy)


def follows_data(strategy: SchedulingStrategy) -> bool:
    return POLICIES[type(strategy)].FOLLOWS_DATA


def named_node(strategy: SchedulingStrategy) -> bytes | None:
    return POLICIES[type(strategy)].named_node(strategy)
