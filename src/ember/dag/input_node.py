"""InputNode: the placeholder for what ``dag.execute(...)`` is given.

Ray's rules, which ember keeps:

- ``with InputNode() as inp:`` builds a DAG that takes input; executing one
  whose InputNode was never entered is an AssertionError, and so is a DAG with
  two different InputNodes. ``InputNode(anything)`` is a ValueError: the input
  comes at ``execute()``, not at construction.
- ``dag.execute(x)`` with exactly one positional argument and no keywords
  makes the input ``x`` itself, so ``inp[0]`` is ``x[0]``, ``inp["k"]`` is
  ``x["k"]`` and ``inp.k`` is ``x.k``. Any other combination makes the input a
  ``DAGInputData`` of all of them: ``inp[0]`` is the first positional argument
  and ``inp.k`` / ``inp["k"]`` the keyword argument ``k``.
- A key must be an int or a str (an AssertionError otherwise, at bind time).

What ember adds: an input that is not there fails with the type Ray's lookup
would raise (IndexError, KeyError) but a message saying what execute() was
given; and a DAG that takes its input whole, executed with none, is a
ValueError (Ray would hand the function an empty DAGInputData).
"""
from __future__ import annotations

from typing import Any

from .dag_node import DAGNode


class DAGInputData:
    """execute()'s arguments as one object, when they are not a single value."""

    def __init__(self, *args, **kwargs):
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key):
        if isinstance(key, int):
            if not -len(self._args) <= key < len(self._args):
                raise IndexError(
                    f"The DAG reads its input [{key}], but execute() was given "
                    f"{len(self._args)} positional argument(s).")
            return self._args[key]
        if isinstance(key, str):
            if key not in self._kwargs:
                raise KeyError(
                    f"The DAG reads its input {key!r}, but execute() was given no keyword "
                    f"argument {key!r} (it was given {sorted(self._kwargs) or 'none'}).")
            return self._kwargs[key]
        raise ValueError("Please only use int index or str as first-level key to access "
                         "fields of dag input.")

    def __repr__(self) -> str:
        return f"DAGInputData(args={self._args!r}, kwargs={self._kwargs!r})"


class InputNode(DAGNode):
    """The DAG's input. Use it as ``with InputNode() as inp:``."""

    is_input = True

    def __init__(self, *args, input_type=None, **kwargs):
        if args or kwargs:
            raise ValueError("InputNode should not take any args or kwargs: the DAG's input "
                             "is given to dag.execute(...).")
        super().__init__((), {}, {})
        #: Ray's annotation of the input's type, for its visualisation; unused here.
        self.input_type = input_type
        self._in_context_manager = False
        #: (accessor, key) -> InputAttributeNode: one node per distinct access.
        self._attribute_nodes: dict = {}

    def __enter__(self) -> "InputNode":
        self._in_context_manager = True
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def __getattr__(self, name: str):
        # Dunders (looked up by pickle, copy, ...) and the node's own fields while
        # it is being rebuilt are real attribute lookups, not input accesses.
        if name.startswith("__") or "_attribute_nodes" not in self.__dict__:
            raise AttributeError(name)
        if name in ("bind", "remote"):
            return super().__getattr__(name)
        return self._attribute("__getattr__", name)

    def __getitem__(self, key) -> "InputAttributeNode":
        assert isinstance(key, (str, int)), (
            "Please only use int index or str as first-level key to access fields of dag "
            f"input, got {key!r}.")
        return self._attribute("__getitem__", key)

    def _attribute(self, accessor: str, key) -> "InputAttributeNode":
        node = self._attribute_nodes.get((accessor, key))
        if node is None:
            node = self._attribute_nodes[(accessor, key)] = InputAttributeNode(
                self, key, accessor)
        return node

    def _execute_impl(self, args, kwargs, result_of, dag_input):
        assert self._in_context_manager, (
            "InputNode is a singleton instance that should be only used in context manager "
            "for dag building and execution: write `with InputNode() as inp:`.")
        input_args, input_kwargs = dag_input
        if len(input_args) == 1 and not input_kwargs:
            return input_args[0]
        return DAGInputData(*input_args, **input_kwargs)


class InputAttributeNode(DAGNode):
    """One part of the DAG's input: ``inp[0]``, ``inp["key"]`` or ``inp.key``."""

    def __init__(self, dag_input_node: InputNode, key, accessor_method: str):
        super().__init__((), {}, {}, {"dag_input_node": dag_input_node, "key": key,
                                       "accessor_method": accessor_method})
        self._dag_input_node = dag_input_node
        self._key = key
        self._accessor_method = accessor_method

    @property
    def key(self):
        return self._key

    def _execute_impl(self, args, kwargs, result_of, dag_input) -> Any:
        value = result_of(self._dag_input_node)
        if isinstance(value, DAGInputData):
            return value[self._key]
        if self._accessor_method == "__getattr__":
            return getattr(value, self._key)
        return value[self._key]

    def _describe(self) -> str:
        return f".{self._key}" if self._accessor_method == "__getattr__" else f"[{self._key!r}]"
