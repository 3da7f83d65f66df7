"""Errors of the state API, under Ray's names (``ray.util.state.exception``)."""
from __future__ import annotations


class RayStateApiException(Exception):
    """The cluster could not answer a state query fully (or at all)."""


#: Ray's older name.
StateApiException = RayStateApiException
