"""The arguments bound to a DAG node, and the nodes hidden inside them.

Ray's rule, which ember follows: a node given as an argument anywhere in
``bind(...)`` — at the top level, or nested at any depth inside a list, dict,
tuple or any other picklable object — is an upstream node. When the DAG runs,
each is replaced by what its execution produced (an ObjectRef, an ActorHandle,
the DAG's input). Then the usual task rule applies: a top-level ObjectRef
argument reaches the function as its value, a nested one as the ObjectRef.

Ray finds nested nodes by pickling the arguments and swaps them by
unpickling. ember does the same with pickle's persistent ids: a node is
written as its index, and read back as its result. Unlike Ray, the scan happens
once, at ``bind()``: the pickled form is a snapshot of the argument as it was
bound (Ray rescans at every ``execute()``, so it sees later mutations; a test
of that would be a test of a bug). Values without nodes in them are kept as
they are, not copied, and plain scalars are not pickled at all.
"""
from __future__ import annotations

import io
import pickle

import cloudpickle

from ..core_worker.serialization import recording_refs

#: Types that cannot hold a node: not scanned.
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None)})


class _NodeFinder(cloudpickle.Pickler):
    """Pickles a value, writing each DAG node in it as a persistent id (its index)."""

    def __init__(self, file, node_type: type):
        super().__init__(file)
        self.node_type = node_type
        self.found: list = []

    def persistent_id(self, obj):
        if isinstance(obj, self.node_type):
            self.found.append(obj)
            return len(self.found) - 1
        return None


class _NodeReplacer(pickle.Unpickler):
    """Reads a value back, each persistent id becoming the result of its node."""

    def __init__(self, file, values: list):
        super().__init__(file)
        self.values = values

    def persistent_load(self, index):
        return self.values[index]


class _Nested:
    """A value with nodes inside: its snapshot, and the nodes in the order pickled."""

    __slots__ = ("original", "pickled", "nodes")

    def __init__(self, original, pickled: bytes, nodes: list):
        #: Kept so that ObjectRefs inside stay counted until the DAG is dropped.
        self.original = original
        self.pickled = pickled
        self.nodes = nodes


def _scan(value, node_type: type):
    """``value`` itself when no node is in it, else a ``_Nested``."""
    if type(value) in _ATOMS or isinstance(value, node_type):
        return value
    buffer = io.BytesIO()
    finder = _NodeFinder(buffer, node_type)
    try:
        with recording_refs():  # refs in it are kept alive by _Nested.original
            finder.dump(value)
    except Exception as exc:
        # Ray fails the same way: a bound argument must pickle (it would be
        # pickled anyway to reach the task).
        raise TypeError(f"Could not serialize the argument {value!r} bound into a DAG "
                        f"node: {exc}") from exc
    if not finder.found:
        return value
    return _Nested(value, buffer.getvalue(), finder.found)


class BoundArguments:
    """``bind(*args, **kwargs)``'s arguments, scanned once for upstream nodes.

    Invariant: ``nodes`` lists each node found anywhere in the arguments once,
    in the order Ray resolves them: positional arguments first, then keyword
    ones, left to right, outer before nested.
    """

    __slots__ = ("args", "kwargs", "_scanned_args", "_scanned_kwargs", "nodes", "_node_type")

    def __init__(self, args: tuple, kwargs: dict, node_type: type):
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self._node_type = node_type
        self._scanned_args = [_scan(a, node_type) for a in self.args]
        self._scanned_kwargs = {k: _scan(v, node_type) for k, v in self.kwargs.items()}
        nodes: dict = {}
        for scanned in (*self._scanned_args, *self._scanned_kwargs.values()):
            for node in (scanned.nodes if isinstance(scanned, _Nested)
                         else [scanned] if isinstance(scanned, node_type) else []):
                nodes.setdefault(id(node), node)
        self.nodes = list(nodes.values())

    def resolve(self, result_of) -> tuple[list, dict]:
        """The arguments with every node replaced by ``result_of(node)``."""
        return ([self._resolve_one(a, result_of) for a in self._scanned_args],
                {k: self._resolve_one(v, result_of) for k, v in self._scanned_kwargs.items()})

    def _resolve_one(self, scanned, result_of):
        if isinstance(scanned, self._node_type):
            return result_of(scanned)
        if isinstance(scanned, _Nested):
            values = [result_of(node) for node in scanned.nodes]
            return _NodeReplacer(io.BytesIO(scanned.pickled), values).load()
        return scanned
