"""ClassNode and ClassMethodNode: actors and their method calls in a DAG.

``Actor.bind(...)`` is a ClassNode: executing the DAG creates the actor, once
per execution however many method nodes use it. ``node.method.bind(...)`` is a
ClassMethodNode: a call of that method on the actor the ClassNode made.
``handle.method.bind(...)`` on an existing actor is a ClassMethodNode too,
which calls that actor at every execution (Ray's way to reuse actors across
executions).

Ray's rule for calls bound on a ClassNode, which ember keeps: each remembers
the call bound before it on the same ClassNode, and runs after it. So calls
bound for their effect (``a.inc.bind(2)``, result unused) still happen when a
later call on ``a`` is in the DAG. Calls bound on a handle are not chained.

Errors keep Ray's types: an InputNode given to an actor's constructor is a
ValueError (the input does not exist when the actor is bound), a method the
class does not have an AttributeError, arguments that do not fit the method's
signature a TypeError, ``.remote()`` on any of these an AttributeError.
"""
from __future__ import annotations

from ..signature import ArgumentCheck
from .dag_node import DAGNode

#: Ray's names for a method call's actor and for the call bound before it on that
#: actor, in ``ClassMethodNode.get_other_args_to_resolve()``.
PARENT_CLASS_NODE_KEY = "parent_class_node"
PREV_CLASS_METHOD_CALL_KEY = "prev_class_method_call"
#: True for the nodes that stand for one return value of a call (see ClassMethodNode).
IS_CLASS_METHOD_OUTPUT_KEY = "is_class_method_output"


class ClassNode(DAGNode):
    """A bound actor creation. ``execute()`` on it returns the ActorHandle."""

    def __init__(self, actor_class, class_name: str, methods: dict, args: tuple,
                 kwargs: dict, options: dict):
        """``actor_class``: anything whose ``.remote(*args, **kwargs)`` creates the
        actor; ``methods``: its method name -> metadata (``signature``, ``num_returns``)."""
        super().__init__(args, kwargs, options)
        self._actor_class = actor_class
        self._class_name = class_name
        self._methods = methods
        #: The method call bound last on this node: the next one runs after it.
        self._last_call: ClassMethodNode | None = None
        if any(node.is_input for node in self._bound.nodes):
            raise ValueError(
                "InputNode handles user dynamic input the DAG, and cannot be used as args, "
                f"kwargs, or other_args_to_resolve in ClassNode constructor ({class_name}) "
                "because it is not available at class construction or binding time.")

    def __getattr__(self, name: str):
        if name.startswith("__") or "_methods" not in self.__dict__:
            raise AttributeError(name)
        if name in ("bind", "remote") and name not in self._methods:
            if name == "remote":
                short_name = self._class_name.rsplit(".", 1)[-1]
                raise AttributeError(
                    f".remote() cannot be used on ClassNode {self}: '{short_name}' has no "
                    "attribute 'remote' once bound. Use .execute() to create the actor.")
            return super().__getattr__(name)
        if name not in self._methods:
            raise AttributeError(f"Actor class {self._class_name} has no method {name!r}. "
                                 f"Its methods are {sorted(self._methods)}.")
        return UnboundClassMethod(self._bind_call, self._class_name, name, {})

    def _bind_call(self, method_name: str, args: tuple, kwargs: dict,
                   options: dict) -> "ClassMethodNode":
        """``self.<method_name>.bind(*args, **kwargs)``: runs after the call bound before."""
        meta = self._methods[method_name]
        ArgumentCheck(meta.get("signature"), f"{self._class_name}.{method_name}")(args, kwargs)
        call = ClassMethodNode(method_name, args, kwargs, options, parent=self,
                               class_name=self._class_name, previous_call=self._last_call)
        self._last_call = call
        return call

    def _execute_impl(self, args, kwargs, result_of, dag_input):
        return self._actor_class.remote(*args, **kwargs)

    def _describe(self) -> str:
        return self._class_name


class UnboundClassMethod:
    """``class_node.method``: ``.bind(...)`` it, optionally after ``.options(...)``."""

    def __init__(self, bind_call, class_name: str, method_name: str, options: dict):
        """``bind_call``: the class node's ``_bind_call``."""
        self._bind_call = bind_call
        self._class_name = class_name
        self._method_name = method_name
        self._options = options

    def options(self, **options) -> "UnboundClassMethod":
        return UnboundClassMethod(self._bind_call, self._class_name, self._method_name,
                                  dict(self._options, **options))

    def bind(self, *args, **kwargs) -> "ClassMethodNode":
        return self._bind_call(self._method_name, args, kwargs, self._options)

    def remote(self, *args, **kwargs):
        raise AttributeError(
            ".remote() cannot be used on ClassMethodNodes. Use .bind() instead to express a "
            f"symbolic actor call: {self._class_name}.{self._method_name}.bind().")

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Use "
                        f"'{self._class_name}.{self._method_name}.bind()'.")


class ClassMethodNode(DAGNode):
    """A bound actor method call. ``execute()`` on it returns its ObjectRef(s).

    ``parent`` is the ClassNode whose actor is called, or the ActorHandle of an
    existing actor, whose method (``actor_method``, what ``handle.method`` is,
    options included) is then called as it is. A call on a handle with
    ``num_returns`` > 1 is split as Ray splits it: one node per return value,
    bound to ``(call, index)`` and marked ``IS_CLASS_METHOD_OUTPUT_KEY``.
    """

    def __init__(self, method_name: str, args: tuple, kwargs: dict, options: dict, *,
                 parent, class_name: str, previous_call: "ClassMethodNode | None" = None,
                 actor_method=None, is_output: bool = False):
        super().__init__(args, kwargs, options,
                         {PARENT_CLASS_NODE_KEY: parent, PREV_CLASS_METHOD_CALL_KEY: previous_call,
                          IS_CLASS_METHOD_OUTPUT_KEY: is_output})
        self._method_name = method_name
        self._parent = parent
        self._class_name = class_name
        self._actor_method = actor_method
        self._is_output = is_output

    @classmethod
    def on_handle(cls, handle, actor_method, method_name: str, class_name: str, args: tuple,
                  kwargs: dict, options: dict, num_returns: int):
        """``handle.method.bind(...)``: the node, or a tuple of one node per return
        value when the method has ``num_returns`` > 1 (as Ray returns them)."""
        call = cls(method_name, args, kwargs, options, parent=handle, class_name=class_name,
                   actor_method=actor_method)
        if num_returns <= 1:
            return call
        return tuple(cls(f"return_idx_{i}", (call, i), {}, {}, parent=handle,
                         class_name=class_name, is_output=True)
                     for i in range(num_returns))

    def get_method_name(self) -> str:
        return self._method_name

    @property
    def is_class_method_output(self) -> bool:
        return self._is_output

    def _execute_impl(self, args, kwargs, result_of, dag_input):
        if self._is_output:
            refs, index = args
            return refs[index]
        if self._actor_method is not None:
            method = self._actor_method
        else:
            method = getattr(result_of(self._parent), self._method_name)
            if self._bound_options:
                method = method.options(**self._bound_options)
        return method.remote(*args, **kwargs)

    def _describe(self) -> str:
        return f"{self._class_name}.{self._method_name}"
