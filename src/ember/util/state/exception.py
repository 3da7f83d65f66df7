"""``ray.util.state.exception``: the state API's errors (defined in ember.observability.errors)."""
from __future__ import annotations

from ...observability.errors import RayStateApiException, StateApiException  # noqa: F401
