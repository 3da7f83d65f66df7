"""Who this core worker is: the facts its components share, and nothing else.

Components receive this record instead of the whole CoreWorker. Most fields
are fixed at start; ``address`` is set once the process serves, ``job_id``
once a driver registered its job (a worker takes its task's job), and
``shutting_down`` at the end, when components must stop starting work.
"""
from __future__ import annotations

import dataclasses

from ..protocol.common import Address


@dataclasses.dataclass
class ProcessInfo:
    worker_id: bytes
    node_id: bytes
    node_ip: str
    is_driver: bool
    session_dir: str
    address: Address | None = None
    job_id: bytes = b"\x00" * 4
    shutting_down: bool = False

    def owns(self, owner: Address | None) -> bool:
        """Is an object with this owner address (None: made here) owned by this process?"""
        return owner is None or owner.worker_id == self.worker_id


@dataclasses.dataclass
class LocalNode:
    """This node's raylet connection and object store client, set by connect().

    None before: components that use them run only once the process is connected.
    """
    raylet: object = None
    object_store: object = None
