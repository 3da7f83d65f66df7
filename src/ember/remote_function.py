"""``@ember.remote`` on a function: RemoteFunction and its ``.remote()`` hot path.

Everything that does not change between calls (the pickled function, its id,
the resource request, the scheduling key) is computed once per set of options
and cached, so that ``f.remote()`` only builds the argument list and the task
spec and hands them to the I/O thread.
"""
from __future__ import annotations

import functools
import inspect

from . import options as opts
from . import runtime_env
from .core_worker import context
from .core_worker.function_manager import function_id_of
from .config import config
from .core_worker.serialization import (dumps_definition, inline_value, pickle_by_value,
                                         serialize_parts)
from .core_worker.task_events import describe
from .core_worker.task_submitter import SchedulingKey
from .dag.function_node import FunctionNode
from .generator import DynamicObjectRefGenerator, GeneratorState, ObjectRefGenerator
from .ids import object_id_for_return
from .object_ref import ObjectRef
from .protocol.core_worker import TaskArg, TaskSpec
from .signature import ArgumentCheck, call_signature
from .core_worker.serialization import unpicklable_message

DEFAULT_MAX_RETRIES = 3


class _Prepared:
    """What ``.remote()`` needs for one set of options, computed once."""

    __slots__ = ("resources", "strategy", "num_returns", "dynamic", "max_retries",
                 "retry_exceptions", "placement_group_id", "capture_child_tasks",
                 "allowlist", "max_calls", "name", "key", "job_id", "runtime_env", "info")

    def __init__(self, function_id: bytes, qualname: str, what: str, is_generator: bool,
                 options: dict, core):
        self.resources, self.strategy = opts.placement(
            options, what, opts.resource_request(options, default_cpus=1.0))
        self.placement_group_id, self.capture_child_tasks = opts.placement_group_of(
            self.strategy)
        num_returns = options.get("num_returns")
        if num_returns is None:
            num_returns = "streaming" if is_generator else 1
        #: "dynamic" runs as a streaming generator whose refs are handed over at once,
        #: as one DynamicObjectRefGenerator, when the task ends.
        self.dynamic = num_returns == "dynamic"
        self.num_returns = -1 if num_returns in ("streaming", "dynamic") else num_returns
        max_retries = options.get("max_retries")
        self.max_retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
        retry = options.get("retry_exceptions", False)
        self.retry_exceptions = bool(retry)
        self.allowlist = (pickle_by_value(tuple(retry))
                          if isinstance(retry, (list, tuple)) else b"")
        max_calls = options.get("max_calls")
        if max_calls is None:
            max_calls = 1 if self.resources.get("GPU") else 0
        self.max_calls = max_calls
        self.name = options.get("name") or ""
        self.job_id = core.job_id
        #: Wire form, merged over the env in force here (packages uploaded now).
        self.runtime_env = runtime_env.resolve(core, options.get("runtime_env"),
                                               core.runtime_env, what)
        self.key = SchedulingKey.make(function_id,
                                 tuple(sorted(self.resources.items())), self.strategy,
                                 core.job_id, f"task {qualname}",
                                 self.runtime_env)
        #: The calls' task-event description (core_worker/task_events.py), made at
        #: the first call.
        self.info = None


def _prepared_key(core) -> tuple | None:
    """What a cached ``_Prepared`` depends on besides the options: the job, the
    placement group that the running task captures its child tasks into (a task
    without a strategy of its own joins it), and the runtime env in force (which
    the task's own env is merged over)."""
    if core is None:
        return None
    return core.job_id, opts.captured_placement_group(core), core.runtime_env


def not_remotable(obj) -> TypeError:
    """The error for ``@ember.remote`` (bare or with options) applied to ``obj``."""
    text = repr(obj)
    if len(text) > 60:
        text = text[:57] + "..."
    return TypeError("The @ember.remote decorator must be applied to either a function or "
                     f"a class, got {type(obj).__name__} ({text}).")


class RemoteFunction:
    def __init__(self, function, options: dict):
        if not (inspect.isfunction(function) or inspect.isbuiltin(function)
                or inspect.ismethod(function)):
            raise not_remotable(function)
        self._function = function
        self._qualname = f"{function.__module__}.{function.__qualname__}"
        self._what = f"remote function {self._qualname}"
        opts.validate(options, opts.TASK_OPTIONS, self._what)
        self._options = options
        self._is_generator = inspect.isgeneratorfunction(function) or \
            inspect.isasyncgenfunction(function)
        self._pickled: bytes | None = None
        self._function_id: bytes | None = None
        self._prepared = _PreparedCache()
        self._check_args = ArgumentCheck(call_signature(function), self._what)
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Remote functions cannot be called directly. Instead of running "
            f"'{self._qualname}()', try '{self._qualname}.remote()'.")

    def options(self, **options) -> "_RemoteFunctionWithOptions":
        """A copy of this function with some options changed, as in Ray."""
        merged = dict(self._options, **options)
        opts.validate(options, opts.TASK_OPTIONS, self._what)
        return _RemoteFunctionWithOptions(self, merged, self._prepare, self._submit,
                                          self._check_args)

    def remote(self, *args, **kwargs):
        return self._submit(self._prepared.get(self._prepare, self._options), args, kwargs)

    def _prepare(self, options: dict) -> _Prepared:
        core = context.require_core(f"{self._qualname}.remote()", auto_init=True)
        if self._pickled is None:
            try:
                self._pickled = core.pin_captured(*dumps_definition(self._function))
            except Exception as exc:
                raise TypeError(f"Could not serialize {self._what}: "
                                + unpicklable_message(self._function, exc)) from exc
            self._function_id = function_id_of(self._pickled)
        return _Prepared(self._function_id, self._qualname, self._what, self._is_generator,
                         options, core)

    def _submit(self, p: _Prepared, args, kwargs):
        self._check_args(args, kwargs)
        core = context.core
        if core is None:
            context.require_core(f"{self._qualname}.remote()")
        core.functions.export(self._function_id, self._pickled)
        if args or kwargs:
            task_args, keep_alive = [], []
            for value in args:
                task_args.append(task_arg(value, keep_alive))
            kwarg_names = list(kwargs) if kwargs else NO_ITEMS
            for value in kwargs.values():
                task_args.append(task_arg(value, keep_alive))
        else:  # a million queued calls hold no empty lists
            task_args = kwarg_names = keep_alive = NO_ITEMS
        task_id = core.ids.task_id()
        spec = TaskSpec(task_id=task_id, job_id=core.job_id, function_id=self._function_id,
                        function_name=self._qualname, args=task_args, kwarg_names=kwarg_names,
                        num_returns=p.num_returns, owner=core.address, resources=p.resources,
                        max_retries=p.max_retries, retry_exceptions=p.retry_exceptions,
                        retry_exception_allowlist=p.allowlist, max_calls=p.max_calls,
                        name=p.name, placement_group_id=p.placement_group_id,
                        capture_child_tasks=p.capture_child_tasks,
                        runtime_env=p.runtime_env)
        info = p.info
        if info is None:  # described once per set of options, not per call
            info = p.info = describe(spec)
        if p.dynamic:
            ref = core.make_ref(object_id_for_return(task_id, DYNAMIC_RETURN_INDEX),
                                core.address)
            state = GeneratorState(task_id, functools.partial(_hand_over, core, ref.object_id))
            core.submit_task(spec, p.key, keep_alive, state, info)
            return ref
        if p.num_returns == -1:
            state = GeneratorState(task_id)
            core.submit_task(spec, p.key, keep_alive, state, info)
            return ObjectRefGenerator(state, core.address, core)
        refs = core.submit_task(spec, p.key, keep_alive, None, info)
        if p.num_returns == 1:
            return refs[0]
        if p.num_returns == 0:
            return None
        return refs

    def bind(self, *args, **kwargs) -> FunctionNode:
        """A call of this function in a DAG (see ``ember.dag``), run by ``execute()``."""
        self._check_args(args, kwargs)
        return FunctionNode(self, args, kwargs, self._options, self.__name__)


#: The return index of a dynamic generator task's own ref (its values use 1, 2, ...;
#: a streaming task's error uses 1 << 20).
DYNAMIC_RETURN_INDEX = (1 << 20) + 1


def _hand_over(core, object_id: bytes, state: GeneratorState) -> None:
    """A dynamic generator task ended: its ref gets the refs of its values, or its error."""
    if state.error is not None:
        core.store.put(object_id, state.error)
        return
    with state.cond:
        refs = [state.available.pop(i) for i in range(state.total) if i in state.available]
    serialized = inline_value(*serialize_parts(DynamicObjectRefGenerator(refs)))
    core.store.put(object_id, serialized)
    core.references.set_nested(object_id, serialized.nested_refs)


class _RemoteFunctionWithOptions:
    """What ``f.options(...)`` returns: ``.remote()`` with the merged options."""

    def __init__(self, parent: RemoteFunction, options: dict, prepare, submit, check_args):
        """``prepare``, ``submit``, ``check_args``: the parent's own (bound) steps."""
        self._parent = parent
        self._options = options
        self._prepare = prepare
        self._submit = submit
        self._check_args = check_args
        self._prepared = _PreparedCache()

    def remote(self, *args, **kwargs):
        return self._submit(self._prepared.get(self._prepare, self._options), args, kwargs)

    def options(self, **options):
        return self._parent.options(**dict(self._options, **options))

    def bind(self, *args, **kwargs) -> FunctionNode:
        """A call in a DAG with these options (see ``ember.dag``)."""
        self._check_args(args, kwargs)
        return FunctionNode(self, args, kwargs, self._options, self._parent.__name__)

    def __call__(self, *args, **kwargs):
        return self._parent(*args, **kwargs)


class _PreparedCache:
    """The _Prepared of one set of options, made again when the job or captured
    placement group changed (see ``_prepared_key``)."""

    __slots__ = ("prepared", "key")

    def __init__(self):
        self.prepared: _Prepared | None = None
        self.key: tuple | None = None

    def get(self, prepare, options: dict) -> _Prepared:
        if self.prepared is None or self.key != _prepared_key(context.core):
            self.prepared = prepare(options)
            # Read the key again: prepare may have started the cluster (auto-init).
            self.key = _prepared_key(context.core)
        return self.prepared


#: The args, kwarg names and kept-alive refs of a call that has none: one shared
#: immutable empty sequence (msgspec encodes it as the empty list it stands for).
NO_ITEMS: tuple = ()


def task_arg(value, keep_alive: list) -> TaskArg:
    """One argument: a ref, or a small value inline. Large values are put in the
    object store and passed by ref, as in Ray, so they are copied once."""
    if type(value) is ObjectRef:
        keep_alive.append(value)
        return TaskArg(object_id=value.object_id, owner=value.owner)
    data, buffers, refs, size = serialize_parts(value)
    core = context.core
    if size > config.max_direct_call_object_size and core.object_store is not None:
        ref = core.put_parts(data, buffers, refs, size)
        keep_alive.append(ref)
        return TaskArg(object_id=ref.object_id, owner=ref.owner)
    if refs:
        keep_alive.extend(ObjectRef(r.object_id, r.owner) for r in refs)
    return TaskArg(value=inline_value(data, buffers, refs, size))


__all__ = ["RemoteFunction"]
