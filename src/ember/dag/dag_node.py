"""DAGNode: a lazily bound call, and ``execute()``, which runs a graph of them once.

``f.bind(x)`` records a call instead of making it; the recorded calls form a
graph through their arguments (Ray's "DAG API", the non-compiled one).
``dag.execute(...)`` walks the graph bottom-up and submits every node exactly
once per execution: a node shared by several others (a diamond) runs once and
its result is passed to all of them, and an actor bound with ``Actor.bind()``
is created once per execution.

Why the walk is written the way it is:

- Iterative, not recursive: Ray recurses, so a chain of a few thousand nodes
  overflows the interpreter's stack there; here it does not.
- Order is Ray's: a node's upstream nodes run left to right (positional
  arguments, keyword arguments, then the node's other dependencies, such as the
  actor of a method call and the call bound before it on that actor), each
  fully before the next. Actor calls from one caller run in submission order,
  so this order is what makes ``a.inc.bind(2)`` without a use still happen
  before a later ``a.get.bind()``, as in Ray.
- A node is identified by the object, not by equality: two equal-looking
  binds are two calls.

Errors keep Ray's types: ``bind``/``remote`` on a node is an AttributeError,
two InputNodes in one DAG an AssertionError (see input_node.py for inputs).
"""
from __future__ import annotations

import uuid
from typing import Any, Callable

from .arguments import BoundArguments
from .compiled_dag import CompiledDAG


class DAGNode:
    """A node of a task graph: a bound call (or an input, or an output list).

    Subclasses say what running the node does in ``_execute_impl``; the
    arguments it gets there have had every upstream node replaced by its result,
    and ``dag_input`` is the ``(args, kwargs)`` given to ``execute()``.
    """

    #: True for InputNode only: the node that stands for execute()'s arguments.
    is_input = False

    def __init__(self, args: tuple, kwargs: dict, options: dict,
                 other_args_to_resolve: dict | None = None):
        self._bound = BoundArguments(args, kwargs, DAGNode)
        self._bound_options = dict(options)
        #: What a node kind needs besides its arguments, by name (Ray's
        #: "other args to resolve"); the nodes among the values run before this
        #: one (the actor of a method call, the call bound before it on that actor).
        self._bound_other_args_to_resolve = dict(other_args_to_resolve or {})
        #: Ray's stable uuid: the same for the node's whole life.
        self._stable_uuid = uuid.uuid4().hex

    # --- what was bound (Ray's accessors) -------------------------------------

    def get_args(self) -> tuple:
        return self._bound.args

    def get_kwargs(self) -> dict:
        return dict(self._bound.kwargs)

    def get_options(self) -> dict:
        return dict(self._bound_options)

    def get_other_args_to_resolve(self) -> dict:
        return dict(self._bound_other_args_to_resolve)

    def get_stable_uuid(self) -> str:
        return self._stable_uuid

    def upstream_nodes(self) -> list["DAGNode"]:
        """Every node this one needs first, in the order they are to run."""
        nodes = list(self._bound.nodes)
        for node in self._bound_other_args_to_resolve.values():
            if isinstance(node, DAGNode) and all(node is not n for n in nodes):
                nodes.append(node)
        return nodes

    # --- running ----------------------------------------------------------------

    def execute(self, *args, **kwargs):
        """Run the graph that ends at this node once; the DAG's input is ``args``/``kwargs``.

        Returns what this node produced: an ObjectRef for a function or method
        call, an ActorHandle for an actor, a list of those for a MultiOutputNode.
        """
        return _run(self, args, kwargs)

    def experimental_compile(self, **options) -> "CompiledDAG":
        """Ray's compiled graph of this DAG; see compiled_dag.py for what ember runs."""
        return CompiledDAG(self, _run, **options)

    def _execute_impl(self, args: list, kwargs: dict, result_of: Callable,
                      dag_input: tuple) -> Any:
        raise NotImplementedError

    # --- misuse -----------------------------------------------------------------

    def __getattr__(self, name: str):
        # Only reached for names that are not attributes.
        if name == "bind":
            raise AttributeError(f".bind() cannot be used again on {type(self).__name__} "
                                 f"{self}: it is already a bound call.")
        if name == "remote":
            raise AttributeError(
                f".remote() cannot be used on {type(self).__name__} {self}. To execute the "
                "task graph for this node, use .execute().")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _describe(self) -> str:
        return ""

    def __str__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"

    __repr__ = __str__


def _run(root: DAGNode, args: tuple, kwargs: dict):
    """Execute every node under ``root`` once, upstream first; ``root``'s result."""
    dag_input = (args, kwargs)
    results: dict[int, Any] = {}
    input_node = None

    def result_of(node: DAGNode):
        return results[id(node)]

    # (node, upstream done?) pairs; a node's upstream ones are pushed above it.
    stack: list[tuple[DAGNode, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        key = id(node)
        if key in results:
            continue
        if not ready:
            # No cycle is possible: a node's upstream nodes existed before it.
            stack.append((node, True))
            stack.extend((n, False) for n in reversed(node.upstream_nodes())
                         if id(n) not in results)
            continue
        if node.is_input:
            if input_node is not None and input_node is not node:
                raise AssertionError("Each DAG should only have one unique InputNode.")
            input_node = node
        elif not args and not kwargs and any(n.is_input for n in node._bound.nodes):
            # Ray would pass an empty input object on; a missing input is a mistake.
            raise ValueError(f"{node} takes the DAG's input, but execute() was called "
                             "without any: pass it as dag.execute(value).")
        call_args, call_kwargs = node._bound.resolve(result_of)
        results[key] = node._execute_impl(call_args, call_kwargs, result_of, dag_input)
    return results[id(root)]
