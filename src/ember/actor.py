"""Actors: ``@ember.remote`` on a class, handles, and method calls.

An actor is a worker process dedicated to one instance of a class. Creating
one registers it with the GCS (which owns its lifecycle), and the GCS places
it on a node and runs ``__init__`` there. Method calls then go straight from
the caller to the actor's worker (see ``core_worker/actor_submitter.py``).

Handles are cheap, picklable and can be passed to tasks and other actors. The
process that created an actor owns it, and, as in Ray, an unnamed, non-detached
actor lives as long as a handle to it exists anywhere or a call made through
one is unfinished. Each handle carries an ObjectRef (the actor's "handle ref",
an object that never gets a value) so that the ownership protocol of objects
(``core_worker/reference_counter.py``) counts handles in every process for
free; when the owner's count of it reaches zero, the actor is killed.
"""
from __future__ import annotations

import inspect
import pickle
import typing

from . import options as opts
from . import runtime_env
from .core_worker import context
from .core_worker.actor_runtime import BUILTIN_METHODS, ActorExitRequest, is_async_class
from .core_worker.function_manager import function_id_of
from .core_worker.serialization import dumps_definition
from .core_worker.task_events import describe
from .core_worker.task_submitter import PendingTask
from .dag.class_node import ClassMethodNode, ClassNode
from .experimental.tensor_transport import check_transport
from .generator import GeneratorState, ObjectRefGenerator
from .ids import actor_handle_id, object_id_for_return
from .object_ref import ObjectRef
from .protocol import gcs as gcs_msg
from .protocol.core_worker import TaskSpec
from .remote_function import NO_ITEMS, task_arg
from . import rpc
from .ids import ActorID
from .signature import ArgumentCheck, call_signature

_METHOD_OPTIONS = {"num_returns", "concurrency_group", "max_task_retries", "retry_exceptions",
                   "name", "enable_task_events", "_generator_backpressure_num_objects",
                   "tensor_transport"}


def method(*args, **kwargs):
    """``@ember.method(num_returns=2, concurrency_group="io")`` on an actor method."""
    unknown = set(kwargs) - _METHOD_OPTIONS
    if unknown:
        raise ValueError(f"Invalid option(s) {sorted(unknown)} for @ember.method; valid ones "
                         f"are {sorted(_METHOD_OPTIONS)}.")
    if "tensor_transport" in kwargs:  # accepted; the value goes through the object store
        check_transport(kwargs["tensor_transport"])

    def decorator(fn):
        fn.__ember_method_options__ = kwargs
        return fn
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorator(args[0])
    if args:
        raise TypeError("@ember.method takes keyword arguments only, e.g. "
                        "@ember.method(num_returns=2).")
    return decorator


def exit_actor() -> None:
    """End the current actor after this call; callers then get ActorDiedError."""
    core = context.require_core("exit_actor()")
    if not getattr(core, "actor_id", b""):
        raise TypeError("exit_actor() was called outside an actor; it can only end the "
                        "actor whose method is running.")
    raise ActorExitRequest()


def method_meta(klass) -> dict:
    """name -> {num_returns, concurrency_group, is_generator} for every callable method."""
    meta = {}
    for name, member in inspect.getmembers(klass):
        if not callable(member) or (name.startswith("__") and name != "__call__"):
            continue
        fn = getattr(member, "__func__", member)
        declared = getattr(fn, "__ember_method_options__", {})
        is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        num_returns = declared.get("num_returns", "streaming" if is_gen else 1)
        # A plain function takes self; a static method does not, a bound classmethod no cls.
        takes_self = inspect.isfunction(inspect.getattr_static(klass, name, None))
        meta[name] = {"num_returns": -1 if num_returns == "streaming" else num_returns,
                      "concurrency_group": declared.get("concurrency_group", ""),
                      "max_task_retries": declared.get("max_task_retries"),
                      "signature": call_signature(member, drop_first=takes_self)}
    for name, builtin in BUILTIN_METHODS.items():
        meta[name] = {"num_returns": 1, "concurrency_group": "", "max_task_retries": 0,
                      "signature": call_signature(builtin, drop_first=True)}
    return meta


class ActorClassInheritanceException(TypeError):
    """A class was defined as a subclass of an actor class (Ray refuses it too)."""


class ActorClassMetadata(typing.NamedTuple):
    """``ActorClass.__ray_metadata__``: what the decorator was given."""

    class_name: str
    modified_class: type
    options: dict


class ActorClass:
    """What ``@ember.remote`` makes of a class. ``Cls.remote()`` creates an actor."""

    @classmethod
    def _from_class(cls, klass, options: dict) -> "ActorClass":
        """Use :func:`actor_class`; a classmethod so that ``__init__`` can refuse
        ``class Sub(SomeActorClass)``."""
        self = cls.__new__(cls)
        self._class = klass
        self._name = klass.__qualname__
        self._what = f"actor class {self._name}"
        opts.validate(options, opts.ACTOR_OPTIONS, self._what)
        self._options = options
        self._methods = method_meta(klass)
        init = klass.__init__
        self._check_init = ArgumentCheck(
            call_signature(init, drop_first=True) if init is not object.__init__
            else call_signature(lambda: None), f"{self._name}.__init__")
        self._pickled = None
        self._class_id = None
        self.__doc__ = klass.__doc__
        return self

    def __init__(self, *args, **kwargs):
        # ``class Sub(SomeActorClass)`` lands here, as type(SomeActorClass)(name, bases, ns).
        if len(args) == 3 and isinstance(args[1], tuple):
            name, bases = args[0], args[1]
            parent = next((b for b in bases if isinstance(b, ActorClass)), None)
            if parent is not None:
                raise ActorClassInheritanceException(
                    f"Cannot define class {name!r} as a subclass of actor class "
                    f"{parent._name!r}. Inheriting from actor classes is not currently "
                    "supported: inherit from the plain class and decorate the subclass "
                    "with @ember.remote instead.")
        raise TypeError("ActorClass is made by @ember.remote on a class, not directly.")

    def __getattr__(self, name: str):
        # Class attributes and static or class methods of the user's class, as Ray's
        # actor class (a subclass of the user's) shows them.
        klass = self.__dict__.get("_class")
        if klass is None or name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(klass, name)
        except AttributeError:
            raise AttributeError(
                f"Actor class {self._name} has no attribute {name!r}.") from None

    @property
    def __ray_metadata__(self) -> "ActorClassMetadata":
        return ActorClassMetadata(self._name, self._class, self._options)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self._name}()', "
            f"use '{self._name}.remote()'.")

    def options(self, **options) -> "_ActorClassWithOptions":
        opts.validate(options, opts.ACTOR_OPTIONS, self._what)
        return _ActorClassWithOptions(self, dict(self._options, **options), self._create,
                                      self._bind)

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._create(args, kwargs, self._options)

    def bind(self, *args, **kwargs) -> ClassNode:
        """An actor created when a DAG runs (see ``ember.dag``), once per ``execute()``."""
        return self._bind(self, args, kwargs, self._options)

    def _bind(self, creator, args, kwargs, options: dict) -> ClassNode:
        self._check_init(args, kwargs)
        return ClassNode(creator, self._name, self._methods, args, kwargs, options)

    def _create(self, args, kwargs, options: dict) -> "ActorHandle":
        self._check_init(args, kwargs)
        core = context.require_core(f"{self._name}.remote()", auto_init=True)
        what = self._what
        name = options.get("name") or ""
        if options.get("get_if_exists") and not name:
            raise ValueError(f"{what}: get_if_exists=True needs a name: the actor name must "
                             "be specified to use get_if_exists.")
        max_restarts = options.get("max_restarts", 0)
        # As Ray, max_task_retries is accepted without max_restarts: with no restart,
        # a call on a dead actor has nothing to retry on.
        max_task_retries = options.get("max_task_retries", 0)
        if self._pickled is None:
            try:
                self._pickled = core.pin_captured(*dumps_definition(self._class))
            except Exception as exc:
                raise TypeError(f"Could not serialize {what}: {exc}") from exc
            self._class_id = function_id_of(self._pickled)
        core.functions.export(self._class_id, self._pickled)
        # Before registering: a directory that cannot be packaged must not leave a
        # name taken.
        env = runtime_env.resolve(core, options.get("runtime_env"), core.runtime_env, what)

        namespace = options.get("namespace") or core.namespace
        detached = options.get("lifetime") == "detached"
        # Ray's defaults: an actor that names no resource (memory aside) needs 1 CPU
        # to be placed and holds none while it runs; one that names any resource
        # holds 1 CPU for its whole life unless num_cpus says otherwise.
        names_resources = (options.get("num_cpus") is not None
                           or options.get("num_gpus") is not None
                           or bool(options.get("resources")))
        running = opts.resource_request(options, default_cpus=1.0 if names_resources else 0.0)
        placement = dict(running)
        if not names_resources:
            placement["CPU"] = 1.0
        placement, strategy = opts.placement(options, what, placement)
        placement_group_id, capture_child_tasks = opts.placement_group_of(strategy)
        running, _ = opts.placement(options, what, running)
        is_async = is_async_class(self._class)
        actor_options = {
            "class_name": self._name, "is_async": is_async, "name": name,
            "max_concurrency": options.get("max_concurrency"),
            "concurrency_groups": options.get("concurrency_groups"),
            "method_groups": {m: meta["concurrency_group"] for m, meta in self._methods.items()
                              if meta["concurrency_group"]},
        }
        if isinstance(actor_options["concurrency_groups"], list):
            actor_options["concurrency_groups"] = {g: 1 for g in actor_options["concurrency_groups"]}
        actor_id = core.ids.actor_id()
        handle_meta = {"max_task_retries": max_task_retries,
                       "max_pending_calls": options.get("max_pending_calls", -1)}
        info = gcs_msg.ActorInfo(
            actor_id=actor_id, job_id=core.job_id, class_name=self._name, state="",
            owner=core.address, name=name, namespace=namespace, is_detached=detached,
            max_restarts=max_restarts, method_meta=pickle.dumps(self._methods),
            handle_meta=pickle.dumps(handle_meta))
        register = gcs_msg.RegisterActor(info, get_if_exists=bool(options.get("get_if_exists")))
        if name:
            # Named actors register synchronously, so a taken name fails right here.
            try:
                reply = core.io.run(core.gcs.call(register), timeout=30)
            except rpc.RemoteError as exc:
                raise ValueError(str(exc).split(": ", 1)[-1]) from None
            if reply.existed:
                return handle_from_info(reply.info)
            register = None

        keep_alive = []
        task_args = [task_arg(v, keep_alive) for v in args]
        task_args += [task_arg(v, keep_alive) for v in kwargs.values()]
        spec = TaskSpec(task_id=core.ids.task_id(), job_id=core.job_id,
                        function_id=self._class_id, function_name=f"{self._name}.__init__",
                        args=task_args, kwarg_names=list(kwargs), num_returns=0,
                        owner=core.address, resources=running, actor_id=actor_id,
                        is_actor_creation=True, actor_options=pickle.dumps(actor_options),
                        placement_group_id=placement_group_id,
                        capture_child_tasks=capture_child_tasks,
                        runtime_env=env)
        create = gcs_msg.CreateActor(actor_id=actor_id, creation_spec=b"",
                                     placement_resources=placement, resources=running,
                                     strategy=strategy)
        task = PendingTask(spec, [], keep_alive, None)
        handle_ref = None
        if not name and not detached:
            # Named and detached actors live until killed; others until this is freed.
            handle_ref = ObjectRef(actor_handle_id(spec.task_id), core.address)
            core.actor_submitter.kill_when_freed(handle_ref.object_id, actor_id)
        core.io.post(core.actor_submitter.create, task, create, register)
        return ActorHandle(actor_id, self._name, self._methods, handle_meta, handle_ref)


class _ActorClassWithOptions:
    def __init__(self, parent: ActorClass, options: dict, create, bind):
        """``create``, ``bind``: the parent's own (bound) steps."""
        self._parent = parent
        self._options = options
        self._create = create
        self._bind = bind

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._create(args, kwargs, self._options)

    def options(self, **options):
        return self._parent.options(**dict(self._options, **options))

    def bind(self, *args, **kwargs) -> ClassNode:
        """An actor with these options, created when a DAG runs (see ``ember.dag``)."""
        return self._bind(self, args, kwargs, self._options)


class ActorHandle:
    """A reference to an actor; ``handle.method.remote(...)`` calls it."""

    def __init__(self, actor_id: bytes, class_name: str, methods: dict, handle_meta: dict,
                 handle_ref: ObjectRef | None = None):
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._meta = handle_meta
        #: Keeps an unnamed, non-detached actor alive (see the module docstring);
        #: None for named and detached actors.
        self._handle_ref = handle_ref
        self._queue = None
        #: method name -> ArgumentCheck, made on the method's first call.
        self._arg_checks: dict = {}
        #: (method name, task name) -> the calls' task-event description, made at the
        #: first call (core_worker/task_events.py).
        self._infos: dict = {}

    @classmethod
    def _from_info(cls, info: gcs_msg.ActorInfo) -> "ActorHandle":
        """A handle looked up by name: named actors are not counted."""
        return cls(info.actor_id, info.class_name, pickle.loads(info.method_meta),
                   pickle.loads(info.handle_meta))

    def __getattr__(self, name: str) -> "ActorMethod":
        # Only called for names that are not attributes; "_methods" itself is
        # missing while a handle is being built or copied.
        methods = self.__dict__.get("_methods")
        meta = methods.get(name) if methods is not None else None
        if meta is None:
            if name.startswith("__") or methods is None:
                raise AttributeError(name)
            raise AttributeError(
                f"Actor {self._class_name} has no method {name!r}. Its methods are "
                f"{sorted(self._methods)}.")
        return ActorMethod(self, name, meta["num_returns"], meta["concurrency_group"],
                           meta.get("max_task_retries"))

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_methods") or ()))

    def __reduce__(self):
        # Pickling the handle ref registers the receiver as a borrower of it.
        return ActorHandle, (self._actor_id, self._class_name, self._methods, self._meta,
                             self._handle_ref)

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __hash__(self):
        return hash(self._actor_id)

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    @property
    def _ray_actor_id(self):
        return ActorID(self._actor_id)

    def _check_call(self, method_name: str, args, kwargs) -> None:
        """TypeError, naming the method, when the arguments do not fit its signature."""
        check = self._arg_checks.get(method_name)
        if check is None:
            meta = self._methods.get(method_name) or {}
            check = self._arg_checks[method_name] = ArgumentCheck(
                meta.get("signature"), f"{self._class_name}.{method_name}")
        check(args, kwargs)

    def _submit(self, method_name: str, args, kwargs, num_returns: int,
                concurrency_group: str, max_task_retries, name: str = ""):
        self._check_call(method_name, args, kwargs)
        core = context.require_core(f"{self._class_name}.{method_name}.remote()")
        submitter = core.actor_submitter
        queue = self._queue
        if queue is None:
            queue = self._queue = submitter.queue_for(self._actor_id, self._class_name,
                                                      self._meta.get("max_task_retries", 0),
                                                      self._meta.get("max_pending_calls", -1))
        if queue.max_pending_calls > 0:
            submitter.reserve_pending_call(queue)
        # An unfinished call keeps the actor alive, even if its handle is gone.
        keep_alive = [] if self._handle_ref is None else [self._handle_ref]
        if args or kwargs:
            task_args = [task_arg(v, keep_alive) for v in args]
            task_args += [task_arg(v, keep_alive) for v in kwargs.values()]
        else:
            task_args = NO_ITEMS
        task_id = core.ids.task_id()
        retries = self._meta.get("max_task_retries", 0) if max_task_retries is None \
            else max_task_retries
        spec = TaskSpec(task_id=task_id, job_id=core.job_id, function_id=b"",
                        function_name=f"{self._class_name}.{method_name}", args=task_args,
                        kwarg_names=list(kwargs) if kwargs else NO_ITEMS,
                        num_returns=num_returns, owner=core.address,
                        resources={}, max_retries=retries, actor_id=self._actor_id,
                        method_name=method_name, concurrency_group=concurrency_group,
                        name=name)
        n = max(num_returns, 1)
        return_ids = [object_id_for_return(task_id, i) for i in range(n)]
        refs = [ObjectRef(oid, core.address) for oid in return_ids]
        info = self._infos.get((method_name, name))
        if info is None:
            info = self._infos[method_name, name] = describe(spec)
        task = PendingTask(spec, return_ids, keep_alive, None, core.current_task_id(), info)
        generator = None
        if num_returns == -1:
            generator = task.generator = GeneratorState(task_id)
        core.submitter.tasks[task_id] = task
        core.io.post(submitter.submit, queue, task)
        if generator is not None:
            return ObjectRefGenerator(generator, core.address, core)
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs


class ActorMethod:
    """``handle.method``: call it with ``.remote()``, or change options first."""

    __slots__ = ("_handle", "_name", "_num_returns", "_group", "_retries", "_task_name")

    def __init__(self, handle: ActorHandle, name: str, num_returns: int, group: str,
                 retries=None, task_name: str = ""):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._group = group
        self._retries = retries
        self._task_name = task_name

    def remote(self, *args, **kwargs):
        return self._handle._submit(self._name, args, kwargs, self._num_returns, self._group,
                                    self._retries, self._task_name)

    def options(self, **options) -> "ActorMethod":
        unknown = set(options) - _METHOD_OPTIONS
        if unknown:
            raise ValueError(
                f"Invalid option(s) {sorted(unknown)} for actor method "
                f"{self._handle._class_name}.{self._name}; valid ones are "
                f"{sorted(_METHOD_OPTIONS)}.")
        num_returns = options.get("num_returns", self._num_returns)
        if num_returns == "streaming":
            num_returns = -1
        if not isinstance(num_returns, int) or num_returns < -1:
            raise ValueError(f"Actor method {self._name}: num_returns must be a non-negative "
                             f"integer or 'streaming', got {num_returns!r}.")
        return ActorMethod(self._handle, self._name, num_returns,
                           options.get("concurrency_group", self._group),
                           options.get("max_task_retries", self._retries),
                           options.get("name", self._task_name))

    def bind(self, *args, **kwargs):
        """A call of this method in a DAG (see ``ember.dag``), made at every
        ``execute()`` on this same actor. A tuple of nodes, one per return value,
        when the method has ``num_returns`` > 1, as in Ray."""
        self._handle._check_call(self._name, args, kwargs)
        options = {"name": self._task_name, "num_returns": self._num_returns,
                   "concurrency_group": self._group}
        return ClassMethodNode.on_handle(self._handle, self, self._name,
                                         self._handle._class_name, args, kwargs, options,
                                         self._num_returns)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'{self._handle._class_name}.{self._name}()', try "
            f"'{self._handle._class_name}.{self._name}.remote()'.")


# Other modules make and read actor classes and handles through these functions,
# not through the classes' private names: a public attribute on ActorClass or
# ActorHandle would hide the user's class attribute or actor method of that name
# (both classes forward unknown names to the user's class).

def actor_class(klass, options: dict) -> ActorClass:
    """``@ember.remote(**options)`` applied to the plain class ``klass``."""
    return ActorClass._from_class(klass, options)


def handle_from_info(info: gcs_msg.ActorInfo) -> ActorHandle:
    """A handle to the actor ``info`` describes (looked up by name: not counted)."""
    return ActorHandle._from_info(info)


def actor_id_of(handle: ActorHandle) -> bytes:
    """The binary id of the actor ``handle`` calls."""
    return handle._actor_id


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]
