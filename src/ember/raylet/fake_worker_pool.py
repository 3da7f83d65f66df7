"""A worker pool with no processes, for unit tests of the lease manager.

It has the interface :class:`~ember.raylet.lease_manager.LeaseWorkers` names, and
its workers are real :class:`~ember.raylet.worker_pool.WorkerHandle` objects
whose process is a stand-in, so the lease manager sees exactly what the raylet's
pool gives it and every worker moves through the real state table. It lends and
takes back by the real pool's rules (:func:`~ember.raylet.worker_pool.lend_idle`,
:func:`~ember.raylet.worker_pool.take_back`).

What takes time or another process in the real pool is a call here, made by
the test when it wants it to happen: :meth:`FakeWorkerPool.register` (a started
worker connected), :meth:`FakeWorkerPool.die` (a worker's connection closed and
its exit was collected). A kill is only recorded; the test decides whether the
worker then dies.
"""
from __future__ import annotations

import signal

from ..protocol.common import Address
from .worker_pool import WorkerHandle, WorkerState, lend_idle, take_back


class FakeProcess:
    """What a WorkerHandle reads of its process: a pid, an exit code, signals."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class FakeWorkerPool:
    """Workers that start, register, lend and die when the test says so.

    ``ports``: how many more workers may start (None: any number), to test the
    leases that fail when the worker port range is used up.
    """

    def __init__(self, node_id: bytes = b"n" * 28, ports: int | None = None,
                 on_worker_ready=None, on_worker_dead=None):
        self.node_id = node_id
        self.ports = ports
        self._on_worker_ready = on_worker_ready or (lambda: None)
        self._on_worker_dead = on_worker_dead or (lambda handle: None)
        self.workers: dict[bytes, WorkerHandle] = {}
        self.idle: list[WorkerHandle] = []
        #: (handle, reason, signal) of every kill asked for, in order.
        self.killed: list[tuple[WorkerHandle, str, int]] = []
        self._next = 1

    # --- the interface the lease manager uses ------------------------------------------

    def pop(self, job_id: bytes) -> WorkerHandle | None:
        return lend_idle(self.idle, job_id)

    def push(self, handle: WorkerHandle) -> None:
        take_back(self.idle, handle)

    def num_starting(self) -> int:
        return sum(w.state is WorkerState.STARTING for w in self.workers.values())

    def start_worker(self) -> WorkerHandle | None:
        if self.ports is not None:
            if self.ports == 0:
                return None
            self.ports -= 1
        n = self._next
        self._next += 1
        handle = WorkerHandle(n.to_bytes(28, "big"), FakeProcess(10_000 + n), None)
        handle.lease_key = n.to_bytes(32, "big")
        self.workers[handle.worker_id] = handle
        return handle

    def ports_exhausted(self) -> str:
        return "no port is free in the fake pool's range"

    def kill(self, handle: WorkerHandle, reason: str, sig: int = signal.SIGKILL) -> None:
        if handle.state is WorkerState.DEAD:
            return
        handle.kill_reason = handle.kill_reason or reason
        handle.process.send_signal(sig)
        self.killed.append((handle, reason, sig))

    # --- what the test makes happen ----------------------------------------------------

    def register(self, count: int | None = None) -> list[WorkerHandle]:
        """``count`` (default: all) of the starting workers connect and become idle."""
        starting = [w for w in self.workers.values() if w.state is WorkerState.STARTING]
        ready = starting[:count] if count is not None else starting
        for handle in ready:
            handle.address = Address(self.node_id, "127.0.0.1", 20_000 + handle.pid)
            handle.transition(WorkerState.IDLE)
            self.idle.append(handle)
        if ready:
            self._on_worker_ready()
        return ready

    def add_idle(self, count: int) -> list[WorkerHandle]:
        """``count`` workers that started and registered already."""
        for _ in range(count):
            self.start_worker()
        return self.register()

    def die(self, handle: WorkerHandle, exit_code: int = -signal.SIGKILL) -> None:
        """The worker's process ended: the pool reports it, as the real one does once
        it has collected the exit status."""
        if handle in self.idle:
            self.idle.remove(handle)
        handle.transition(WorkerState.DEAD)
        handle.process.returncode = exit_code
        handle.exit_code = exit_code
        self.workers.pop(handle.worker_id, None)
        self._on_worker_dead(handle)
