"""Who this core worker is: the facts its components share, and nothing else.

Components receive this record instead of the whole CoreWorker. Most fields
are fixed at start; ``address`` is set once the process serves, ``job_id`` and
``namespace`` once a driver registered its job (a worker takes its task's),
the actor fields when a worker becomes an actor, and ``shutting_down`` at the
end, when components must stop starting work.
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
    namespace: str = ""
    #: The runtime env in force, in its wire form (ember/runtime_env.py): the
    #: job's in a driver, the running task's or the actor's in a worker. Tasks
    #: and actors submitted from here inherit it.
    runtime_env: str = ""
    #: The actor this process hosts (b"" for drivers and task workers), and its group.
    actor_id: bytes = b""
    actor_placement_group_id: bytes = b""
    #: The key the raylet signs this worker's lease grants with (ember.rpc.auth).
    lease_key: bytes = b""
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
