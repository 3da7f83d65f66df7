"""Turning values into bytes and back, as Ray does.

- Values of the common plain types (bytes, str, int, float, bool, None, and
  flat containers of them) go through the C pickler directly: the fast path
  that tiny task arguments and results take.
- Everything else goes through cloudpickle, which also handles lambdas,
  closures and classes defined in ``__main__``, with one change of ours (see
  :class:`_Pickler`): code pickled by value keeps the file it was written in.
- Pickle protocol 5 is used throughout, so numpy arrays and other buffer
  owners can travel out of band (the object store maps them without copying).
- ObjectRefs found inside a value are recorded while pickling
  (``ObjectRef.__reduce__`` calls :func:`record_ref`), so the owner can learn
  who borrows them.
- An ObjectRef pickled by the program itself (``pickle``/``ray.cloudpickle``,
  "out of band") escapes that bookkeeping: nothing tells its owner that the
  bytes hold a reference. As Ray does, this process then pins the object for
  the rest of its life, so that a ref loaded back from those bytes still finds
  its value (a leak rather than a hang).

A value that cannot be pickled raises ``TypeError`` naming the offending
object, the way Ray's ``inspect_serializability`` would, instead of a bare
pickle traceback.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import pickle
import threading
import traceback
import types
from collections import ChainMap

import cloudpickle

from ..exceptions import RaySystemError, RayTaskError
from . import context
from ..protocol.common import (VALUE_ERROR, VALUE_PICKLE, ObjectRefInfo,
                               SerializedValue)

_PLAIN = (bytes, str, int, float, bool, type(None))
_context = threading.local()


def record_ref(object_id: bytes, owner) -> None:
    """Called by ObjectRef.__reduce__: note a ref inside the value being pickled."""
    refs = getattr(_context, "refs", None)
    if refs is not None:
        refs.append(ObjectRefInfo(object_id, owner))
    else:
        _pin_out_of_band(object_id, owner)


#: Objects this process pinned because their refs were pickled out of band.
_pinned_out_of_band: set[bytes] = set()


def _pin_out_of_band(object_id: bytes, owner) -> None:
    core = context.core
    if core is None or object_id in _pinned_out_of_band:
        return
    _pinned_out_of_band.add(object_id)
    core.references.add_local_ref(object_id, owner)  # never removed: pinned for life


@contextlib.contextmanager
def recording_refs():
    """Pickle inside this to collect the ObjectRefs pickled (a list) instead of
    pinning them as refs pickled out of band."""
    previous = getattr(_context, "refs", None)
    _context.refs = refs = []
    try:
        yield refs
    finally:
        _context.refs = previous


def _rebuild_code(rebuild, args, filename: str) -> types.CodeType:
    """Make a code object as cloudpickle would, then give it its real file back."""
    code = rebuild(*args)
    return code if code.co_filename == filename else code.replace(co_filename=filename)


_cloudpickle_code_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _reduce_code(code: types.CodeType):
    return _rebuild_code, (*_cloudpickle_code_reduce(code), code.co_filename)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, except that code pickled by value keeps its file name.

    Why: since cloudpickle 3.1.3 every function pickled by value is recorded as
    written in ``"<dynamic-code>"``, to make payloads deterministic. A remote
    traceback then loses its file and source lines, which users rely on to see
    where their task failed. Ray vendors its own cloudpickle for this reason;
    wrapping the one reduction that changed keeps ember on the released package.
    """

    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def pickle_by_value(obj, protocol: int = 5, buffer_callback=None) -> bytes:
    """``cloudpickle.dumps``, keeping source file names (see :class:`_Pickler`)."""
    with io.BytesIO() as file:
        _Pickler(file, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


def _is_plain(value) -> bool:
    t = type(value)
    if t in _PLAIN:
        return True
    if t in (list, tuple) and len(value) <= 16:
        return all(type(v) in _PLAIN for v in value)
    return False


def dumps(value, buffer_callback=None) -> bytes:
    """Pickle ``value`` (protocol 5), with a clear error when it cannot be."""
    if _is_plain(value):
        return pickle.dumps(value, 5)
    try:
        return pickle_by_value(value, buffer_callback=buffer_callback)
    except Exception as exc:
        raise TypeError(unpicklable_message(value, exc)) from exc


def dumps_definition(obj) -> tuple[bytes, list[ObjectRefInfo]]:
    """Pickle a remote function or actor class, and the ObjectRefs it captures.

    By value, with cloudpickle. The refs (actor handles included) are the
    ones its closure or globals hold; the caller pins them for the job's life,
    as Ray does: the definition may run anywhere, any time, and needs them.
    """
    with recording_refs() as refs:
        return pickle_by_value(obj), refs


def serialize_parts(value):
    """(pickle stream, out-of-band buffers, nested refs, total size) of ``value``.

    Large numpy arrays and other pickle-5 buffer owners come out as separate
    buffers, so that they can be copied once, straight into the object store.
    """
    if _is_plain(value):
        data = pickle.dumps(value, 5)
        return data, [], [], len(data)
    buffers: list[pickle.PickleBuffer] = []
    with recording_refs() as refs:
        data = dumps(value, buffer_callback=buffers.append)
    size = len(data) + sum(b.raw().nbytes for b in buffers)
    return data, buffers, refs, size


def inline_value(data: bytes, buffers: list, refs: list, size: int) -> SerializedValue:
    """A small value that travels inside messages, its buffers copied into bytes."""
    return SerializedValue(VALUE_PICKLE, data, [bytes(b.raw()) for b in buffers] if buffers
                           else [], refs, size)


def serialize(value) -> SerializedValue:
    """Serialize a value to travel inside messages, recording the ObjectRefs in it."""
    return inline_value(*serialize_parts(value))


def deserialize(value: SerializedValue):
    """The Python value of a SerializedValue; raises if it carries an error."""
    if value.kind == VALUE_PICKLE:
        if value.buffers:
            return pickle.loads(value.data, buffers=value.buffers)
        return pickle.loads(value.data)
    if value.kind == VALUE_ERROR:
        raise _load_error(value)
    raise RaySystemError(f"cannot read a value of kind {value.kind} here")


def _load_error(value: SerializedValue) -> BaseException:
    try:
        err = pickle.loads(value.data)
    except Exception as exc:  # the error's class is not importable here
        return RaySystemError(f"could not deserialize a remote error: {exc}")
    if isinstance(err, RayTaskError):
        return err.as_instanceof_cause()
    return err


def serialize_error(err: BaseException) -> SerializedValue:
    """Serialize an exception to raise at ``get``; never fails."""
    try:
        data = pickle_by_value(err)
    except Exception as exc:
        if isinstance(err, RayTaskError):
            # The cause is not picklable: keep its text and traceback.
            fallback = RayTaskError(err.function_name, err.traceback_str,
                                    RuntimeError(f"{type(err.cause).__name__}: {err.cause}"),
                                    err.proctitle, err.pid, err.ip, err.actor_repr)
        else:
            fallback = RaySystemError(f"{type(err).__name__}: {err} (unpicklable: {exc})")
        data = pickle_by_value(fallback)
    return SerializedValue(VALUE_ERROR, data, size=len(data))


def task_error(exc: BaseException, function_name: str, ip: str | None,
               actor_repr: str | None = None) -> RayTaskError:
    """Wrap an exception raised by user code, keeping only the user's frames."""
    tb = exc.__traceback__
    # Drop the executor's own frame(s): the user wants to see their code.
    while tb is not None and "ember/core_worker" in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_tb(tb)) if tb else ""
    text += "".join(traceback.format_exception_only(type(exc), exc))
    # A task that failed because a task it waited on failed keeps the original
    # cause, so that ``except IndexError`` still catches it at the driver, as in
    # Ray; the text above already holds the inner task's traceback.
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    return RayTaskError(function_name, text, cause, ip=ip, actor_repr=actor_repr)


def unpicklable_message(value, exc: Exception) -> str:
    found = _find_unpicklable(value)
    what = f"{type(value).__name__} object {_short_repr(value)}"
    if found is not None:
        where, culprit = found
        return (f"Could not serialize {what}: its {where} is {_short_repr(culprit)} "
                f"of type {type(culprit).__name__}, which cannot be pickled ({exc}). "
                "Create it inside the task instead, or pass something picklable.")
    return (f"Could not serialize {what}: {exc}. Create it inside the task instead, "
            "or pass something picklable.")


def _short_repr(obj) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _find_unpicklable(value, depth: int = 0):
    """Depth-first search for the innermost part of ``value`` that fails to pickle.

    Returns ``(where, part)``, where ``where`` says how to reach the part from
    ``value`` ("global variable 'lock'", "item 1, key 'a'"), or None.
    """
    if depth > 4:
        return None
    for where, child in _parts(value):
        try:
            pickle_by_value(child)
        except Exception:
            deeper = _find_unpicklable(child, depth + 1)
            if deeper is None:
                return where, child
            return f"{where}, {deeper[0]}", deeper[1]
    return None


def _parts(value) -> list[tuple[str, object]]:
    """The named parts pickling ``value`` pickles too, one level down."""
    if isinstance(value, dict):
        return [(f"key {k!r}", v) for k, v in value.items()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [(f"item {i}", v) for i, v in enumerate(value)]
    if inspect.isfunction(value):
        code = value.__code__
        parts = [(f"captured variable {name!r}", cell.cell_contents)
                 for name, cell in zip(code.co_freevars, value.__closure__ or ())
                 if _cell_has(cell)]
        globals_ = value.__globals__
        parts += [(f"global variable {name!r}", globals_[name]) for name in code.co_names
                  if name in globals_ and not isinstance(globals_[name], types.ModuleType)]
        return parts
    if isinstance(value, type):
        return [(f"method {k!r}", v) for k, v in vars(value).items() if inspect.isfunction(v)]
    if hasattr(value, "__dict__"):
        return [(f"attribute {k!r}", v) for k, v in vars(value).items()]
    return []


def _cell_has(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def serialize_to_store(value) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """(main pickle, out-of-band buffers) of ``value``, ready for StoreClient.put."""
    buffers: list[pickle.PickleBuffer] = []
    main = dumps(value, buffer_callback=buffers.append)
    return main, buffers
