"""Ray's API-stability decorators (``ray.util.annotations``), for code that uses them.

They mark, they do not change: each returns what it decorates. Programs and
libraries written for Ray decorate their own APIs with them, so they must
import.
"""
from __future__ import annotations


class RayDeprecationWarning(DeprecationWarning):
    """What Ray warns with when a deprecated API is used (shown by default)."""


def _marker(obj=None, **_options):
    """Usable bare (``@PublicAPI``) or with options (``@PublicAPI(stability="beta")``)."""
    if obj is not None and callable(obj) and not _options:
        return obj
    return lambda target: target


PublicAPI = DeveloperAPI = Deprecated = _marker

__all__ = ["PublicAPI", "DeveloperAPI", "Deprecated", "RayDeprecationWarning"]
