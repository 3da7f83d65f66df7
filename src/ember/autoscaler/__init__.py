"""The autoscaler: nodes added for demand the cluster cannot hold, removed once idle.

- :mod:`.config`: the cluster config (Ray's YAML shape) and its validation.
- :mod:`.scheduler`: the decision, a pure function of (demand, nodes, config).
- :mod:`.providers`: node providers (``local``, ``command``) behind one interface.
- :mod:`.monitor`: the process on the head that runs a round every period.
- :mod:`.sdk`: ``request_resources``, as in Ray.
"""
from __future__ import annotations

from . import sdk  # ``ember.autoscaler.sdk.request_resources``, as Ray's path
