"""Ray's tensor-transport API (Ray Direct Transport), accepted; values use the object store.

Ray can keep an actor method's tensors in the actor and move them straight to
the reader over a transport (NCCL, Gloo, NIXL, or one a program registers with
``register_tensor_transport``). ember has no GPU object store: a method marked
``@ember.method(tensor_transport=...)`` returns its value through the object
store like any other (shared memory within a node), so programs run unchanged
and get the same values; the transport's manager is not called.

The types here are what a custom transport subclasses; the names a method may
give are the built-in ones and those registered in this process.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, List, Optional

#: Ray's built-in transport names (compared without case).
BUILTIN_TRANSPORTS = ("object_store", "nccl", "gloo", "nixl", "cuda_ipc")


@dataclasses.dataclass
class CommunicatorMetadata:
    """What a transport needs to know about the two actors of a transfer."""


@dataclasses.dataclass
class TensorTransportMetadata:
    """The tensors of one object: ``(shape, dtype)`` of each, and their device."""

    tensor_meta: List[Any]
    tensor_device: Optional[str] = None


class TensorTransportManager(abc.ABC):
    """The interface of a custom transport, as Ray defines it."""

    @abc.abstractmethod
    def tensor_transport_backend(self) -> str: ...

    @staticmethod
    @abc.abstractmethod
    def is_one_sided() -> bool: ...

    @staticmethod
    @abc.abstractmethod
    def can_abort_transport() -> bool: ...

    @abc.abstractmethod
    def actor_has_tensor_transport(self, actor) -> bool: ...

    @abc.abstractmethod
    def extract_tensor_transport_metadata(self, obj_id: str,
                                          rdt_object: List[Any]) -> TensorTransportMetadata: ...

    @abc.abstractmethod
    def get_communicator_metadata(self, src_actor, dst_actor,
                                  backend: Optional[str] = None) -> CommunicatorMetadata: ...

    @abc.abstractmethod
    def recv_multiple_tensors(self, obj_id: str, tensor_transport_metadata, communicator_metadata,
                              target_buffers: Optional[List[Any]] = None): ...

    @abc.abstractmethod
    def send_multiple_tensors(self, tensors, tensor_transport_metadata,
                              communicator_metadata): ...

    @abc.abstractmethod
    def garbage_collect(self, obj_id: str, tensor_transport_meta, tensors): ...

    @abc.abstractmethod
    def abort_transport(self, obj_id: str, communicator_metadata): ...


#: name (lower case) -> (devices, manager class, data type), registered in this process.
_registered: dict[str, tuple] = {}


def register_tensor_transport(name: str, devices: List[str], manager_class: type,
                              data_type: type) -> None:
    """Register a custom transport under ``name`` for ``@ember.method(tensor_transport=)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"A tensor transport needs a non-empty name, got {name!r}.")
    if name.lower() in BUILTIN_TRANSPORTS:
        raise ValueError(f"{name!r} is a built-in tensor transport; register yours under "
                         "another name.")
    if not (isinstance(manager_class, type) and issubclass(manager_class, TensorTransportManager)):
        raise TypeError(f"register_tensor_transport({name!r}) needs a TensorTransportManager "
                        f"subclass, got {manager_class!r}.")
    _registered[name.lower()] = (list(devices), manager_class, data_type)


def check_transport(name) -> None:
    """Refuse a ``tensor_transport`` that is neither built in nor registered here."""
    if not isinstance(name, str) or (name.lower() not in BUILTIN_TRANSPORTS
                                     and name.lower() not in _registered):
        known = sorted(set(BUILTIN_TRANSPORTS) | set(_registered))
        raise ValueError(f"Unknown tensor_transport {name!r}: use one of {known}, or register "
                         "it first with ember.experimental.register_tensor_transport().")
