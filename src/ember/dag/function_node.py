"""FunctionNode: ``f.bind(...)``, a remote function call that runs when the DAG does.

The node keeps what ``bind`` was called on (the remote function, or what
``f.options(...)`` returned) and calls its ``.remote()`` at execution, so the
options given before ``bind`` hold and the function is exported once, not at
each execution.
"""
from __future__ import annotations

from .dag_node import DAGNode


class FunctionNode(DAGNode):
    """A bound task. ``execute()`` submits it and returns its ObjectRef."""

    def __init__(self, remote_function, args: tuple, kwargs: dict, options: dict,
                 name: str = ""):
        """``remote_function``: anything with ``.remote(*args, **kwargs)`` (a
        RemoteFunction, or the result of its ``.options()``)."""
        super().__init__(args, kwargs, options)
        self._remote_function = remote_function
        self._name = name or getattr(remote_function, "__name__", "function")

    def _execute_impl(self, args, kwargs, result_of, dag_input):
        return self._remote_function.remote(*args, **kwargs)

    def _describe(self) -> str:
        return self._name
