"""The exceptions a user of ember can see, with Ray's names and hierarchy.

::

    Exception
     └── RayError
          ├── RayTaskError ........... the task raised; also an instance of the cause's class
          ├── TaskCancelledError ..... ray.cancel() reached the task
          ├── WorkerCrashedError ..... the worker process died while running the task
          ├── RayActorError .......... the actor cannot run the call
          │    ├── ActorDiedError
          │    └── ActorUnavailableError
          ├── ActorUnschedulableError / TaskUnschedulableError
          ├── GetTimeoutError ........ (also a TimeoutError) ray.get(timeout=...) ran out
          ├── ObjectLostError ........ no copy of the value is reachable
          │    ├── OwnerDiedError
          │    ├── ObjectFetchTimedOutError
          │    ├── ObjectReconstructionFailedError
          │    └── ReferenceCountingAssertionError
          ├── ObjectStoreFullError / OutOfDiskError / OutOfMemoryError
          ├── NodeDiedError / LocalRayletDiedError
          ├── RaySystemError ......... ember itself failed; the message says where
          │    └── IllegalTransition . a state machine took a move its table forbids
          ├── PendingCallsLimitExceeded
          ├── RuntimeEnvSetupError
          └── TaskPlacementGroupRemoved / ActorPlacementGroupRemoved

Every message says what happened and, where there is one, what to do about it.
"""
from __future__ import annotations

import os


class RayError(Exception):
    """Base of every ember error."""


class CrossLanguageError(RayError):
    pass


class RaySystemError(RayError):
    def __init__(self, client_exc, traceback_str=None):
        self.client_exc = client_exc
        self.traceback_str = traceback_str
        super().__init__(client_exc)

    def __str__(self):
        msg = f"System error: {self.client_exc}"
        if self.traceback_str:
            msg += f"\ntraceback: {self.traceback_str}"
        return msg


class IllegalTransition(RaySystemError):
    """A record (task, lease, worker, actor, ...) was moved between states its
    transition table does not connect: a bug in ember, not in the user's program.

    Every state machine keeps an Enum, a table of allowed next states and one
    transition method that checks it and raises this, so the message names the
    record and both states, and one log line leads to the code path.
    """

    def __init__(self, what: str, old, new):
        self.what, self.old, self.new = what, old, new
        super().__init__(f"{what}: illegal state transition {old.name} -> {new.name} "
                         "(a bug in ember; please report it with this message)")


class RayTaskError(RayError):
    """A task or actor method raised an exception.

    ``ray.get`` raises an instance of a class made by :meth:`as_instanceof_cause`,
    so that ``except ZeroDivisionError`` catches a remote ``1 / 0`` just as
    ``except RayTaskError`` does.
    """

    def __init__(self, function_name, traceback_str, cause, proctitle=None,
                 pid=None, ip=None, actor_repr=None, actor_id=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"ember::{function_name}"
        self.pid = pid if pid is not None else os.getpid()
        self.ip = ip
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        super().__init__(function_name, traceback_str, cause)

    def __reduce__(self):
        return RayTaskError, (self.function_name, self.traceback_str,
                              _picklable_cause(self.cause), self.proctitle, self.pid,
                              self.ip, self.actor_repr, self.actor_id)

    def __str__(self):
        where = f"pid={self.pid}" + (f", ip={self.ip}" if self.ip else "")
        head = f"{type(self.cause).__name__ if self.cause is not None else 'Error'}"
        lines = [f"{head}: {self.proctitle}() ({where})"]
        if self.actor_repr:
            lines[0] += f", actor={self.actor_repr}"
        if self.traceback_str:
            lines.append(self.traceback_str.rstrip())
        return "\n".join(lines)

    def as_instanceof_cause(self):
        """Return an exception that is both a RayTaskError and a ``type(cause)``.

        Falls back to plain RayTaskError when the cause's class cannot be
        subclassed (final classes, or ones whose ``__init__`` needs arguments
        we do not have, which we avoid by never calling it).
        """
        cause_cls = type(self.cause)
        if self.cause is None or issubclass(cause_cls, RayTaskError):
            return self
        err = _new_dual_instance(cause_cls)
        if err is None:
            return self
        err.__dict__.update(getattr(self.cause, "__dict__", {}))
        err.function_name = self.function_name
        err.traceback_str = self.traceback_str
        err.cause = self.cause
        err.proctitle = self.proctitle
        err.pid = self.pid
        err.ip = self.ip
        err.actor_repr = self.actor_repr
        err.actor_id = self.actor_id
        err.args = getattr(self.cause, "args", ())
        return err


class _ExceptionByState:
    """Pickles an exception as its class, args and ``__dict__``, never calling ``__init__``.

    Python pickles an exception as ``cls(*args)``, which fails to load for any
    class whose ``__init__`` takes other arguments than it passes on to
    ``Exception.__init__``, a common pattern in user code
    (``def __init__(self, msg, code): super().__init__(msg)``). Rebuilt from
    its state, the cause comes back as it was raised, attributes and all.
    """

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __reduce__(self):
        exc = self.exc
        return _rebuild_exception, (type(exc), exc.args, getattr(exc, "__dict__", None))


def _rebuild_exception(cls, args, state):
    exc = cls.__new__(cls, *args)
    exc.args = args
    if state:
        exc.__setstate__(state)
    return exc


def _picklable_cause(cause):
    """``cause``, wrapped to pickle by state unless its class pickles itself its own way."""
    if cause is None:
        return None
    cls = type(cause)
    if cls.__reduce__ is BaseException.__reduce__ and cls.__reduce_ex__ is object.__reduce_ex__:
        return _ExceptionByState(cause)
    return cause


#: cause class -> its dual class, or None when no dual class can be made.
_dual_classes: dict = {}


def _new_dual_instance(cause_cls):
    """A bare instance of the dual class of ``cause_cls``, or None if there is none.

    The dual class lists RayTaskError first, so RayTaskError's methods win. But
    a class with its own C-level ``__new__`` (``MemoryError``, which keeps a
    free list, and many C-extension exceptions) refuses to build an instance
    of a class whose first base does not share that ``__new__``: CPython raises
    ``TypeError: MemoryError.__new__(X) is not safe``. For those the bases go
    the other way round (the cause's class first); ``__str__`` and
    ``__reduce__`` are set on the class itself, so the message and pickling
    are RayTaskError's either way. If neither order works, the caller falls
    back to a plain RayTaskError, which still carries the remote traceback.
    """
    if cause_cls in _dual_classes:
        cls = _dual_classes[cause_cls]
        return None if cls is None else cls.__new__(cls)
    for bases in ((RayTaskError, cause_cls), (cause_cls, RayTaskError)):
        try:
            cls = _make_dual_class(cause_cls, bases)
            err = cls.__new__(cls)
        except TypeError:
            continue
        _dual_classes[cause_cls] = cls
        return err
    _dual_classes[cause_cls] = None
    return None


def _make_dual_class(cause_cls, bases):
    def __str__(self):
        return RayTaskError.__str__(self)

    def __reduce__(self):
        return RayTaskError.__reduce__(self)

    cls = type(f"RayTaskError({cause_cls.__name__})", bases,
               {"__str__": __str__, "__reduce__": __reduce__,
                "__init__": lambda self, *a, **k: None,
                "as_instanceof_cause": RayTaskError.as_instanceof_cause,
                "__module__": cause_cls.__module__})
    cls.__qualname__ = cls.__name__
    return cls


class TaskCancelledError(RayError):
    def __init__(self, task_id=None, error_message=None):
        self.task_id = task_id
        self.error_message = error_message
        super().__init__(task_id, error_message)

    def __str__(self):
        if self.error_message:
            return self.error_message
        return f"Task {self.task_id} was cancelled by ray.cancel()."


class WorkerCrashedError(RayError):
    def __init__(self, message="The worker died unexpectedly while executing this task."):
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


class RayActorError(RayError):
    """An actor cannot run the call: it died, or never started."""

    def __init__(self, cause=None, error_msg=None, actor_id=None):
        self.actor_id = actor_id
        self.cause = cause
        if error_msg is None:
            error_msg = str(cause) if cause is not None else "The actor died unexpectedly."
        self.error_msg = error_msg
        super().__init__(error_msg)

    def __str__(self):
        return self.error_msg


class ActorDiedError(RayActorError):
    pass


class ActorUnavailableError(RayActorError):
    pass


class ActorUnschedulableError(RayError):
    pass


class TaskUnschedulableError(RayError):
    pass


class LocalRayletDiedError(RayError):
    def __str__(self):
        return "The task's local raylet died. Check raylet.out for more information."


class NodeDiedError(RayError):
    pass


class GetTimeoutError(RayError, TimeoutError):
    """``ray.get`` did not finish within its timeout."""


class ObjectStoreFullError(RayError):
    pass


class OutOfDiskError(RayError):
    pass


class OutOfMemoryError(RayError):
    """The memory monitor killed the worker running the task to keep the node alive.

    The message names the task, the node, the memory in use and the threshold,
    and what to change (see ember.raylet.memory_monitor).
    """

    def __init__(self, message="The task's worker was killed because the node ran low "
                               "on memory."):
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


class ObjectLostError(RayError):
    def __init__(self, object_ref_hex, owner_address=None, call_site="", message=None):
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        self.message = message
        super().__init__(object_ref_hex, owner_address, call_site, message)

    def __str__(self):
        if self.message:
            return self.message
        return (f"Failed to retrieve object {self.object_ref_hex}. "
                "All copies of it are lost.")


class OwnerDiedError(ObjectLostError):
    pass


class ObjectFetchTimedOutError(ObjectLostError):
    pass


class ObjectReconstructionFailedError(ObjectLostError):
    pass


class ReferenceCountingAssertionError(ObjectLostError):
    pass


class PendingCallsLimitExceeded(RayError):
    pass


class RuntimeEnvSetupError(RayError):
    pass


class TaskPlacementGroupRemoved(RayError):
    pass


class ActorPlacementGroupRemoved(RayError):
    pass


class AsyncioActorExit(RayError):
    pass


class PlasmaObjectNotAvailable(RayError):
    pass


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    """The object's task was re-run as many times as its max_retries allowed."""


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    """What it takes to re-run the object's task was no longer kept."""


class ObjectRefStreamEndOfStreamError(RayError):
    """A streaming generator has no more values."""


class UnserializableException(RayError):
    """A task's exception that could not be unpickled where it was raised to.

    Carries the original error's description as text, so that what happened is
    not lost with the type.
    """

    def __init__(self, original_stack_trace: str):
        self._original_stack_trace = original_stack_trace
        super().__init__(original_stack_trace)

    def __str__(self):
        return ("Failed to deserialize the exception a task raised; the original error "
                f"was:\n{self._original_stack_trace}")


class AuthenticationError(RayError, ConnectionError):
    """A server refused this process's cluster token. Retrying cannot help."""


class RayChannelError(RaySystemError):
    """Compiled graphs' channels (not part of ember)."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """Compiled graphs' channels (not part of ember)."""


class RayCgraphCapacityExceeded(RaySystemError):
    """Compiled graphs (not part of ember)."""


class RayDirectTransportError(RayError):
    """Ray's direct GPU object transport (not part of ember)."""
