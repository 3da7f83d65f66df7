"""``ember.util.register_serializer``: custom serialization for one type, as in Ray.

Registered through :mod:`copyreg`, which both the plain pickler and
cloudpickle consult, so the serializer applies wherever ember pickles a value
in this process: arguments, results, ``put``. As in Ray, it applies only in
the process that registers it; the deserializer travels with each value, so
the receiving side needs nothing registered.
"""
from __future__ import annotations

import copyreg


def register_serializer(cls: type, *, serializer, deserializer) -> None:
    """Serialize instances of ``cls`` with ``serializer(obj)``; rebuild them with
    ``deserializer(serialized)``. Both must be callables; the second is pickled
    with every value (by reference if importable, else by value)."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() takes a class, not {type(cls).__name__}")
    for name, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if not callable(fn):
            raise TypeError(f"register_serializer(): {name} must be callable, "
                            f"not {type(fn).__name__}")

    def reduce(obj):
        return deserializer, (serializer(obj),)
    copyreg.pickle(cls, reduce)


def deregister_serializer(cls: type) -> None:
    """Undo :func:`register_serializer` for ``cls`` (nothing happens if none is set)."""
    copyreg.dispatch_table.pop(cls, None)
