"""CompiledDAG: Ray's compiled-graph API (``dag.experimental_compile()``), run as a task graph.

Ray compiles an actor graph once into shared-memory channels that the actors
read in a loop, so that each ``execute()`` skips task submission. ember keeps
the API and runs each ``execute()`` as one execution of the lazy graph
(``dag_node._run``): the same actor calls, in the same order, with the same
results and errors, but at the cost of ordinary actor calls. What this buys is
that code written for compiled graphs runs unchanged; what it does not buy is
Ray's lower latency, nor GPU tensor channels (``with_tensor_transport``).

Lifecycle, as in Ray: compiled -> (execute ...) -> torn down. ``teardown()``
ends it (and kills the graph's actors with ``kill_actors=True``); executing a
torn-down graph is an error.
"""
from __future__ import annotations

import asyncio
import enum
import typing
import uuid

from ..core_worker import context

if typing.TYPE_CHECKING:
    from .dag_node import DAGNode


class CompiledDAGState(enum.Enum):
    #: Accepting execute() calls.
    COMPILED = "compiled"
    #: teardown() ran; execute() raises.
    TORN_DOWN = "torn_down"


class CompiledDAG:
    """What ``experimental_compile()`` returns: execute it as often as needed."""

    def __init__(self, root: "DAGNode", run: typing.Callable, *, enable_asyncio: bool = False,
                 **_ray_tuning):
        # Ray's tuning knobs (_submit_timeout, _buffer_size_bytes,
        # _max_inflight_executions, _overlap_gpu_communication...) configure its
        # channels, which ember does not have: accepted and ignored.
        self._root = root
        #: dag_node._run: one execution of the graph.
        self._run = run
        self._enable_asyncio = enable_asyncio
        self._state = CompiledDAGState.COMPILED
        self._id = uuid.uuid4().hex

    def get_id(self) -> str:
        return self._id

    def execute(self, *args, **kwargs):
        """Run the graph once; an ObjectRef (a list of them for a MultiOutputNode).

        ``ember.get`` on the result gives the value, as on Ray's CompiledDAGRef.
        """
        self._check_usable("execute")
        if self._enable_asyncio:
            raise ValueError("This compiled graph was compiled with enable_asyncio=True: "
                             "use `await compiled_dag.execute_async(...)` instead of "
                             "execute().")
        return self._run(self._root, args, kwargs)

    async def execute_async(self, *args, **kwargs):
        """Run the graph once; an awaitable of the value (a list of them for several outputs)."""
        self._check_usable("execute_async")
        result = self._run(self._root, args, kwargs)
        if isinstance(result, list):
            return [asyncio.wrap_future(ref.future()) for ref in result]
        return asyncio.wrap_future(result.future())

    def teardown(self, kill_actors: bool = False) -> None:
        """End the graph; with ``kill_actors``, kill the actors its calls go to."""
        if self._state is CompiledDAGState.TORN_DOWN:
            return
        self._state = CompiledDAGState.TORN_DOWN
        if kill_actors:
            core = context.require_core("CompiledDAG.teardown(kill_actors=True)")
            for actor_id in _actor_ids(self._root):
                core.kill_actor(actor_id, no_restart=True,
                                reason="teardown(kill_actors=True) of its compiled graph")

    def visualize(self, filename: str = "compiled_graph", format: str = "png",
                  view: bool = False, channel_details: bool = False) -> str:
        """Draw the graph with graphviz to ``filename.format``; returns the file's path."""
        try:
            import graphviz
        except ImportError:
            raise ImportError("visualize() draws with the graphviz package: install it with "
                              "`pip install graphviz` (and Graphviz's `dot` program, e.g. "
                              "`apt-get install graphviz`).") from None
        dot = graphviz.Digraph(comment=f"compiled graph {self._id}")
        names: dict[int, str] = {}
        for index, node in enumerate(_nodes(self._root)):
            names[id(node)] = str(index)
            dot.node(str(index), f"{index}: {node}")
        for node in _nodes(self._root):
            for upstream in node.upstream_nodes():
                if id(upstream) in names:
                    dot.edge(names[id(upstream)], names[id(node)])
        return dot.render(filename, format=format, view=view)

    def _check_usable(self, what: str) -> None:
        if self._state is CompiledDAGState.TORN_DOWN:
            raise RuntimeError(f"{what}() on a compiled graph that was torn down: compile "
                               "the DAG again with dag.experimental_compile().")

    def __del__(self):
        self._state = CompiledDAGState.TORN_DOWN


def _nodes(root: "DAGNode") -> list["DAGNode"]:
    """Every node under ``root``, upstream first, each once."""
    seen: dict = {}
    order: list = []
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in seen:
            continue
        if expanded:
            seen[id(node)] = node
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((n, False) for n in reversed(node.upstream_nodes()) if id(n) not in seen)
    return order


def _actor_ids(root: "DAGNode") -> list[bytes]:
    """The ids of the existing actors (handles) the graph's method calls go to."""
    ids: list[bytes] = []
    for node in _nodes(root):
        for other in node.get_other_args_to_resolve().values():  # a method call's actor
            actor_id = getattr(other, "_actor_id", None)
            if isinstance(actor_id, bytes) and actor_id not in ids:
                ids.append(actor_id)
    return ids
