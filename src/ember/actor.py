"""Actors. Class decoration works; creating actors is not implemented yet.

The full actor model (GCS-managed lifecycle, direct calls, restarts, named and
detached actors) is tracked as its own piece of work.
"""
from __future__ import annotations

from . import options as opts


class ActorClass:
    @classmethod
    def _from_class(cls, klass, options: dict) -> "ActorClass":
        self = cls()
        self._class = klass
        self._options = options
        opts.validate(options, opts.ACTOR_OPTIONS, f"actor class {klass.__qualname__}")
        return self

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of "
            f"'{self._class.__qualname__}()', use '{self._class.__qualname__}.remote()'.")

    def options(self, **options):
        opts.validate(options, opts.ACTOR_OPTIONS, f"actor class {self._class.__qualname__}")
        return self

    def remote(self, *args, **kwargs):
        raise NotImplementedError(
            f"Creating actor {self._class.__qualname__}: actors are not implemented in "
            "this version of ember yet; use remote functions.")


def method(*args, **kwargs):
    """``@ember.method(num_returns=...)``: options for one actor method."""
    def decorator(fn):
        fn.__ember_method_options__ = kwargs
        return fn
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorator(args[0])
    return decorator
