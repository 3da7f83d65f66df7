"""MultiOutputNode: one DAG, several results.

``MultiOutputNode([a, b])`` is the end of a DAG whose ``execute()`` returns a
list with the result of each node in it (ObjectRefs for calls), in order, as
Ray does. Only a list or a tuple is accepted (a ValueError otherwise, as in Ray).
"""
from __future__ import annotations

from .dag_node import DAGNode


class MultiOutputNode(DAGNode):
    """The DAG's outputs, listed; executing it gives a list of their results."""

    def __init__(self, args, other_args_to_resolve=None):
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"Invalid input type for `args`, {type(args)}: MultiOutputNode "
                             "takes a list of DAG nodes.")
        super().__init__(tuple(args), {}, {})

    def _execute_impl(self, args, kwargs, result_of, dag_input) -> list:
        return list(args)

    def _describe(self) -> str:
        return f"{len(self.get_args())} outputs"
