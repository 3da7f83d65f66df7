"""The raylet's worker pool: start, register, lend, take back and reap workers.

A worker's life (:class:`WorkerState`; :meth:`WorkerHandle.transition` allows only
these edges)::

    STARTING ──register──► IDLE ◄──return──┐
       │                    │              │
       │                    └──pop──► LEASED
       │                                   │
       └──────── exit / crash / kill ──────┴──► DEAD

- Workers are started ahead of demand (``prestart``), so the first task of a
  session does not pay Python's start-up time.
- A worker is bound to the first job that leases it and only serves that job
  afterwards: the job's code and ``sys.path`` are loaded into it. When the job
  ends, its workers are stopped.
- Idle workers beyond the soft limit are reaped after ``idle_worker_timeout_s``:
  asked to exit (``ExitIfIdle``). A worker that owns objects still referenced
  elsewhere declines, as in Ray, since its death would lose them; it goes back
  to the pool and is asked again after another timeout.
- Each worker's stdout and stderr go to files in the session's ``logs/``; the
  log monitor reads them for the drivers.
- Each worker listens on a port of the node's worker port range, the next
  one none of its workers holds and no other process holds either
  (``ember.ports``). When there is none, no worker starts, and the lease
  manager fails the leases waiting for one with an error naming the range.

Only the raylet's event loop thread touches the pool.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import subprocess
import sys
import time

from ..config import config
from ..exceptions import IllegalTransition
from ..ports import WorkerPortAllocator
from ..protocol import core_worker as cw
from .zygote import Zygote

#: How long a worker sent SIGTERM has to exit before it gets SIGKILL.
KILL_GRACE_S = 2.0

logger = logging.getLogger(__name__)


class WorkerState(enum.Enum):
    STARTING = "starting"  # process spawned, not registered yet
    IDLE = "idle"          # registered, waiting in the pool
    LEASED = "leased"      # lent to an owner under a lease
    DEAD = "dead"          # exited; kept briefly to answer failure-cause queries


#: The moves of the diagram above: state -> the states it may go to next.
_WORKER_EDGES = {
    WorkerState.STARTING: frozenset({WorkerState.IDLE, WorkerState.DEAD}),
    WorkerState.IDLE: frozenset({WorkerState.LEASED, WorkerState.DEAD}),
    WorkerState.LEASED: frozenset({WorkerState.IDLE, WorkerState.DEAD}),
    WorkerState.DEAD: frozenset(),
}


class WorkerHandle:
    def __init__(self, worker_id: bytes, process, log_paths):
        self.worker_id = worker_id
        #: A subprocess.Popen, or a zygote.ForkedProcess with the same interface.
        self.process = process
        self.log_paths = log_paths
        self.state = WorkerState.STARTING
        self.conn = None
        self.address = None
        #: Signs this worker's lease grants; set when it registers.
        self.lease_key = b""
        #: b"" until the first lease binds the worker to a job.
        self.job_id = b""
        self.lease = None
        #: Set while the worker hosts an actor; such a worker is never reused.
        self.actor_id = b""
        self.idle_since = time.monotonic()
        self.started_at = time.monotonic()
        self.death_cause = ""
        self.exit_code: int | None = None
        #: Set when the raylet itself killed the worker, with the reason and signal.
        self.kill_reason = ""
        #: The worker said it is exiting on purpose (WorkerExiting).
        self.exiting = False
        self.kill_signal = 0
        #: Set when the memory monitor killed it: (OutOfMemoryError message, retry).
        self.out_of_memory: tuple[str, bool] | None = None
        #: The TCP port it was given (0: any); the one it listens on once registered.
        self.port = 0


    def transition(self, new: WorkerState) -> None:
        """The only way ``state`` changes: along an edge of ``_WORKER_EDGES``."""
        if new not in _WORKER_EDGES[self.state]:
            raise IllegalTransition(f"worker {self.worker_id.hex()} (pid {self.pid})",
                                    self.state, new)
        self.state = new

    @property
    def pid(self) -> int:
        return self.process.pid


def lend_idle(idle: list[WorkerHandle], job_id: bytes) -> WorkerHandle | None:
    """Take from ``idle`` the worker to lease to ``job_id`` and mark it LEASED (bound to
    the job): the most recently idle one already bound to it, else an unbound one.

    A function (as is :func:`take_back`), so that the fake pool (fake_worker_pool.py)
    lends exactly as the real one.
    """
    for i in range(len(idle) - 1, -1, -1):
        if idle[i].job_id == job_id:
            handle = idle.pop(i)
            break
    else:
        for i in range(len(idle) - 1, -1, -1):
            if not idle[i].job_id:
                handle = idle.pop(i)
                break
        else:
            return None
    handle.job_id = job_id
    handle.transition(WorkerState.LEASED)
    return handle



def take_back(idle: list[WorkerHandle], handle: WorkerHandle) -> None:
    """A lease of ``handle`` ended: it is idle again, in ``idle``, unless it died meanwhile."""
    if handle.state is WorkerState.DEAD:
        return
    handle.transition(WorkerState.IDLE)
    handle.lease = None
    handle.idle_since = time.monotonic()
    idle.append(handle)


class WorkerPool:
    def __init__(self, node_id: bytes, session_dir: str, env: dict[str, str],
                 soft_limit: int, ports: WorkerPortAllocator, port_is_free,
                 on_worker_ready, on_worker_dead):
        self.node_id = node_id
        self.session_dir = session_dir
        self.logs_dir = os.path.join(session_dir, "logs")
        self._env = env
        self.soft_limit = soft_limit
        self._on_worker_ready = on_worker_ready
        self._on_worker_dead = on_worker_dead
        self.workers: dict[bytes, WorkerHandle] = {}
        self._idle: list[WorkerHandle] = []
        self._dead: dict[bytes, WorkerHandle] = {}
        self._reaper: asyncio.Task | None = None
        #: Exit requests to idle workers in flight.
        self._tasks: set[asyncio.Task] = set()
        self.zygote: Zygote | None = None
        #: Which port each new worker gets; ``port_is_free(port)`` tries to bind it.
        self.ports = ports
        self._port_is_free = port_is_free

    # --- starting -------------------------------------------------------------

    def start_worker(self) -> WorkerHandle | None:
        """Start a worker on the next free port of the range; None if none is free
        (:meth:`ports_exhausted` says why)."""
        port = self.ports.acquire(self._port_is_free)
        if port is None:
            return None
        worker_id = os.urandom(28)
        tag = f"worker-{worker_id.hex()[:12]}"
        out_path = os.path.join(self.logs_dir, tag + ".out")
        err_path = os.path.join(self.logs_dir, tag + ".err")
        # The range too: a worker whose port was taken meanwhile binds another of it.
        extra = {"EMBER_WORKER_ID": worker_id.hex(), "EMBER_WORKER_PORT": str(port),
                 "EMBER_WORKER_PORTS": self.ports.ports.spec}
        zygote = self.zygote
        if zygote is not None and zygote.alive():
            process = zygote.fork(worker_id.hex(), extra, out_path, err_path)
        else:
            with open(out_path, "ab") as out, open(err_path, "ab") as err:
                process = subprocess.Popen(
                    [sys.executable, "-m", "ember.core_worker.worker_main"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    env=dict(self._env, **extra), close_fds=True)
        handle = WorkerHandle(worker_id, process, (out_path, err_path))
        handle.port = port
        self.workers[worker_id] = handle
        return handle

    def ports_exhausted(self) -> str:
        """Why :meth:`start_worker` could not start a worker (the range, for errors)."""
        return self.ports.exhausted_message()

    def start_zygote(self) -> None:
        """Start the process that forks workers (see core_worker/zygote.py)."""
        if not config.use_zygote:
            return
        try:
            self.zygote = Zygote(self._env, os.path.join(self.logs_dir, "zygote.log"))
            self.zygote.start_reading()
        except OSError as exc:
            logger.warning("could not start the worker zygote (%s); spawning workers", exc)
            self.zygote = None

    def num_starting(self) -> int:
        return sum(w.state is WorkerState.STARTING for w in self.workers.values())

    def prestart(self, count: int) -> None:
        for _ in range(max(0, count - self.num_starting() - len(self._idle))):
            if self.start_worker() is None:
                break

    def register(self, worker_id: bytes, pid: int, conn, address) -> WorkerHandle | None:
        handle = self.workers.get(worker_id)
        if handle is None or handle.state is not WorkerState.STARTING:
            return None
        handle.conn = conn
        handle.address = address
        if address is not None and address.port != handle.port:
            self.ports.release(handle.port)  # it had to bind another port of the range
            handle.port = address.port
            self.ports.hold(handle.port)
        handle.transition(WorkerState.IDLE)
        handle.idle_since = time.monotonic()
        self._idle.append(handle)
        self._on_worker_ready()
        return handle

    # --- lending ----------------------------------------------------------------

    def pop(self, job_id: bytes) -> WorkerHandle | None:
        """An idle worker for ``job_id``: one already bound to it, else an unbound one."""
        return lend_idle(self._idle, job_id)

    def push(self, handle: WorkerHandle) -> None:
        """A lease ended; the worker waits for the next one."""
        take_back(self._idle, handle)

    def has_idle_for(self, job_id: bytes) -> bool:
        return any(w.job_id in (job_id, b"") for w in self._idle)

    # --- stopping ---------------------------------------------------------------

    def kill(self, handle: WorkerHandle, reason: str, sig: int = signal.SIGKILL) -> None:
        """Signal ``handle``'s process. SIGTERM lets a worker send its last task events
        first (see worker_main); one still alive ``KILL_GRACE_S`` later gets SIGKILL."""
        if handle.state is WorkerState.DEAD or handle.process.poll() is not None:
            return  # it already exited, and its exit status says why
        handle.kill_reason = handle.kill_reason or reason
        handle.kill_signal = handle.kill_signal or sig
        try:
            handle.process.send_signal(sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:
            asyncio.get_running_loop().call_later(KILL_GRACE_S, self._kill_hard, handle)

    @staticmethod
    def _kill_hard(handle: WorkerHandle) -> None:
        if handle.process.poll() is None:
            try:
                handle.process.kill()
            except ProcessLookupError:
                pass

    def kill_job_workers(self, job_id: bytes) -> None:
        """Stop a finished job's task workers. Actor workers are left to the GCS,
        which keeps detached actors alive and kills the others itself."""
        for handle in list(self.workers.values()):
            if handle.job_id == job_id and not handle.actor_id:
                self.kill(handle, f"its job {job_id.hex()} finished", signal.SIGTERM)

    def disconnected(self, handle: WorkerHandle) -> None:
        """The worker's connection closed: it is exiting or dead. Find out how."""
        if handle.state is WorkerState.DEAD:
            return
        if handle in self._idle:
            self._idle.remove(handle)
        handle.transition(WorkerState.DEAD)
        self.ports.release(handle.port)
        self.workers.pop(handle.worker_id, None)
        self._dead[handle.worker_id] = handle
        asyncio.get_running_loop().create_task(self._collect_exit(handle))

    async def _collect_exit(self, handle: WorkerHandle) -> None:
        # The socket closes a moment before the process is reapable.
        for delay in (0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
            await asyncio.sleep(delay)
            code = handle.process.poll()
            if code is not None:
                break
        else:
            code = None
        handle.exit_code = code
        handle.death_cause = describe_exit(handle, code)
        self._on_worker_dead(handle)
        # Forget the dead after a while; their causes are only asked for soon after.
        asyncio.get_running_loop().call_later(60, self._dead.pop, handle.worker_id, None)

    def find(self, worker_id: bytes) -> WorkerHandle | None:
        """A live worker, or one that died recently."""
        return self.workers.get(worker_id) or self._dead.get(worker_id)

    def failure_cause(self, worker_id: bytes):
        handle = self._dead.get(worker_id)
        if handle is None:
            return "", None
        return handle.death_cause, handle.exit_code

    def start_reaper(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def _reap_loop(self) -> None:
        """Reap idle workers above the soft limit, and workers that never registered."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            surplus = len(self._idle) - self.soft_limit
            for handle in sorted(self._idle, key=lambda w: w.idle_since):
                if surplus <= 0:
                    break
                if now - handle.idle_since > config.idle_worker_timeout_s:
                    self._idle.remove(handle)
                    surplus -= 1
                    self._start(self._ask_to_exit(handle))
            for handle in list(self.workers.values()):
                if handle.state is WorkerState.STARTING:
                    code = handle.process.poll()
                    if code is not None:
                        handle.conn = None
                        self.disconnected(handle)
                    elif now - handle.started_at > config.worker_register_timeout_s:
                        self.kill(handle, "it did not register in time")

    async def _ask_to_exit(self, handle: WorkerHandle) -> None:
        """Reap an idle worker, unless it owns objects in use (then it stays idle)."""
        try:
            reply = await handle.conn.call(cw.ExitIfIdle(), timeout=10)
        except Exception:  # noqa: BLE001 - gone or unresponsive: end it the hard way
            self.kill(handle, "idle", signal.SIGTERM)
            return
        if not reply.exiting and handle.state is not WorkerState.DEAD:
            handle.idle_since = time.monotonic()
            self._idle.append(handle)
            self._on_worker_ready()

    def _start(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        handles = list(self.workers.values())
        for handle in handles:
            try:
                handle.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        for handle in handles:
            while handle.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if handle.process.poll() is None:
                handle.process.kill()
                handle.process.wait()
        if self.zygote is not None:
            self.zygote.close()

    def debug_state(self) -> dict:
        states: dict[str, int] = {}
        for w in self.workers.values():
            states[w.state.value] = states.get(w.state.value, 0) + 1
        return {"workers": states, "recently_dead": len(self._dead),
                "ports": self.ports.debug_state()}


def killed_by_raylet(handle: WorkerHandle, code: int | None) -> bool:
    """The raylet's own kill ended the worker. One that died on its own while a kill
    was on its way is judged by its own exit status, not blamed on the raylet."""
    return bool(handle.kill_reason) and (code is None or code == -handle.kill_signal)


def describe_exit(handle: WorkerHandle, code: int | None) -> str:
    """A sentence on how a worker ended, for errors the user reads."""
    who = f"worker (pid {handle.pid})"
    if killed_by_raylet(handle, code):
        return f"{who} was killed by the raylet because {handle.kill_reason}"
    if code is None:
        return f"{who} closed its connection to the raylet and did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (possibly the out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"{who} was killed by {name}{hint}"
    if code == 0:
        return f"{who} exited (exit code 0)"
    return f"{who} exited with exit code {code}; see {handle.log_paths[1]}"
