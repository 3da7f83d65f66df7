"""``ember.util.inspect_serializability``: find what in a value cannot be pickled.

A task's function, arguments or an actor's class often fail to pickle
because of one captured object deep inside (a lock, a socket, a database
client). This walks the value the way cloudpickle would capture it (closure
cells and globals of functions, attributes of objects, members of classes)
and reports the innermost objects that fail, with the path to each.
"""
from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from ..core_worker.serialization import pickle_by_value, recording_refs


class FailureTuple(NamedTuple):
    """One object that cannot be pickled: it, its name, and what holds it."""

    obj: Any
    name: str
    parent: Any


def inspect_serializability(base_obj, name: str | None = None, depth: int = 3,
                            print_file=None) -> tuple[bool, set]:
    """Whether ``base_obj`` pickles; if not, the innermost failing members.

    Returns ``(serializable, failures)``; also prints a short report.
    """
    name = name or getattr(base_obj, "__name__", None) or type(base_obj).__name__
    failures: set = set()
    ok = _inspect(base_obj, name, None, depth, failures, set())
    lines = [f"Checking serializability of {name!r}: "
             + ("serializable." if ok else "NOT serializable.")]
    for failure in sorted(failures, key=lambda f: f.name):
        lines.append(f"    cannot pickle {failure.name!r}: {type(failure.obj).__name__}")
    print("\n".join(lines), file=print_file)
    return ok, failures


def _pickles(obj) -> bool:
    try:
        with recording_refs():  # a trial: refs in it are not pinned
            pickle_by_value(obj)
    except Exception:  # noqa: BLE001 - any failure means "not serializable"
        return False
    return True


def _inspect(obj, name: str, parent, depth: int, failures: set, seen: set) -> bool:
    if _pickles(obj):
        return True
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    found = False
    if depth > 0:
        for child_name, child in _members(obj):
            if not _inspect(child, child_name, obj, depth - 1, failures, seen):
                found = True
    if not found:  # nothing inside explains it: this object is the culprit
        try:
            failures.add(FailureTuple(obj, name, parent))
        except TypeError:  # unhashable culprit: record it by its type
            failures.add(FailureTuple(type(obj), name, parent))
    return False


def _members(obj):
    """What cloudpickle would pickle along with ``obj``."""
    if inspect.isfunction(obj):
        closure = inspect.getclosurevars(obj)
        yield from closure.nonlocals.items()
        yield from closure.globals.items()
    elif inspect.isclass(obj):
        for key, value in vars(obj).items():
            if not key.startswith("__"):
                yield key, value
    elif hasattr(obj, "__dict__"):
        yield from vars(obj).items()
    elif isinstance(obj, dict):
        yield from ((repr(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from ((f"[{i}]", v) for i, v in enumerate(obj))
