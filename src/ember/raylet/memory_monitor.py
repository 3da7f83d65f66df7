"""The memory monitor: kill one worker before the kernel's OOM killer kills anything.

Why: when a node runs out of memory the kernel picks a victim by its own
score, which may be the raylet or the GCS; a task that dies that way is
retried at full cost until ``max_retries`` runs out and ends in a
``WorkerCrashedError`` that does not say why. Ray's raylet instead checks the
node's memory every ``memory_monitor_refresh_ms`` (250 ms) and, above
``memory_usage_threshold`` (0.95), kills one worker itself, chosen so that the
least work is lost, and tells the owner ``OutOfMemoryError``. ember does the
same, with the same settings (``EMBER_MEMORY_MONITOR_REFRESH_MS``,
``EMBER_MEMORY_USAGE_THRESHOLD``; 0 ms disables the monitor).

What "memory" is. The node's, from ``psutil.virtual_memory()`` (used = total -
available, so reclaimable page cache does not count), unless the raylet's own
cgroup has a tighter limit: then that cgroup's usage and limit, since that
limit is where the kernel will kill (a container, a systemd slice, a test's
cgroup). cgroup v2 (``memory.max``/``memory.current``) and v1
(``memory.limit_in_bytes``/``memory.usage_in_bytes``) are both read; the
inactive file cache is subtracted, as Ray does, because the kernel reclaims
it before it kills. Only the raylet's own cgroup is read, not its ancestors.

Which worker (Ray's group-by-owner policy, :func:`choose_worker_to_kill`).
Candidates are the workers under a lease. They fall in tiers, killed in this
order: tasks that can be retried (``max_retries != 0``), then tasks that
cannot, then actors (whose state a kill loses). Within a tier, the retriable
tasks are grouped by owner (the non-retriable tasks form one group, and the
actors another): the largest group goes first, ties to the group that
started most recently, and within the group the worker whose lease started
last. Killing the newest loses the least work; taking from the largest
owner's group first stops one fan-out from starving the others. A killed task
is retried (without spending ``max_retries``) only if other tasks of its owner
still run here: a task alone in its group is what fills the memory itself,
and retrying it would only fill it again, so its owner gets
``OutOfMemoryError`` at once.

One kill at a time: after a kill the monitor waits until that worker has
exited before it chooses another, since memory is freed only then.

Cost: one check reads ``/proc/meminfo`` (and two or three small cgroup files)
on the raylet's loop, tens of microseconds; see ``debug_state()`` for the
measured mean.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os
import time

import psutil

logger = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"


# --- reading memory -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemorySnapshot:
    """Bytes in use and the bytes available in all, where the kernel would kill."""

    used: int
    total: int
    #: "node" or the cgroup directory the numbers were read from.
    source: str = "node"

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class CgroupFiles:
    """The files that give one cgroup's memory usage and limit."""

    usage: str
    limit: str
    stat: str
    #: The memory.stat key of the inactive file cache.
    inactive_file_key: str


def own_memory_cgroup(proc_cgroup: str = "/proc/self/cgroup",
                      root: str = CGROUP_ROOT) -> CgroupFiles | None:
    """This process's memory cgroup files (v2 first, else v1), or None if there is none."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v2_path = v1_path = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    if v2_path is not None:
        for mount in (root, os.path.join(root, "unified")):
            directory = os.path.join(mount, v2_path.lstrip("/"))
            if os.path.exists(os.path.join(directory, "memory.max")):
                return CgroupFiles(os.path.join(directory, "memory.current"),
                                   os.path.join(directory, "memory.max"),
                                   os.path.join(directory, "memory.stat"), "inactive_file")
    if v1_path is not None:
        directory = os.path.join(root, "memory", v1_path.lstrip("/"))
        if os.path.exists(os.path.join(directory, "memory.limit_in_bytes")):
            return CgroupFiles(os.path.join(directory, "memory.usage_in_bytes"),
                               os.path.join(directory, "memory.limit_in_bytes"),
                               os.path.join(directory, "memory.stat"), "total_inactive_file")
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_stat(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def read_memory(cgroup: CgroupFiles | None) -> MemorySnapshot:
    """The node's memory, or the cgroup's when its limit is below the node's memory."""
    vm = psutil.virtual_memory()
    node = MemorySnapshot(vm.total - vm.available, vm.total)
    if cgroup is None:
        return node
    limit = _read_int(cgroup.limit)
    if limit is None or limit <= 0 or limit >= vm.total:
        return node  # no limit ("max", or v1's huge number): the node's memory counts
    usage = _read_int(cgroup.usage)
    if usage is None:
        return node
    used = max(0, usage - _read_stat(cgroup.stat, cgroup.inactive_file_key))
    return MemorySnapshot(used, limit, os.path.dirname(cgroup.limit))


# --- the policy (pure) --------------------------------------------------------------------


class Tier(enum.IntEnum):
    """What a worker runs, in the order in which workers are killed."""

    RETRIABLE_TASK = 0
    TASK = 1
    ACTOR = 2


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A worker under a lease, as the policy sees it."""

    worker_id: bytes
    tier: Tier
    #: The lease's owner (a worker id); groups retriable tasks.
    owner_id: bytes
    #: When its lease was granted (any monotonic clock).
    started_at: float
    #: What it runs, for the error and the log ("f", "actor A").
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    victim: Candidate
    #: Whether the owner should retry the killed task (other tasks of its group run on).
    retry: bool


def choose_worker_to_kill(candidates: list[Candidate]) -> Decision | None:
    """The worker to kill to free memory, and whether its task should be retried.

    See the module docstring for the order. None when there is no candidate.
    """
    if not candidates:
        return None
    groups: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        key = (c.tier, c.owner_id if c.tier is Tier.RETRIABLE_TASK else b"")
        groups.setdefault(key, []).append(c)

    def order(item):
        (tier, _), members = item
        # Lowest tier first; then the largest group; then the group that started last.
        return (tier, -len(members), -min(m.started_at for m in members))
    (tier, _), members = min(groups.items(), key=order)
    victim = max(members, key=lambda m: m.started_at)
    return Decision(victim, retry=tier is Tier.RETRIABLE_TASK and len(members) > 1)


# --- the monitor -----------------------------------------------------------------------


def _usage(snapshot: MemorySnapshot) -> str:
    gib = 1024 ** 3
    where = f"the cgroup {snapshot.source}" if snapshot.source != "node" else "the node"
    return (f"{snapshot.used / gib:.2f} GiB / {snapshot.total / gib:.2f} GiB "
            f"({snapshot.fraction:.3f}) in {where}")


def kill_reason(snapshot: MemorySnapshot, threshold: float) -> str:
    """Why the worker died, as its death cause reads (actors' errors quote it)."""
    return (f"the node ran low on memory: {_usage(snapshot)}, above the memory usage "
            f"threshold of {threshold:.2f} (EMBER_MEMORY_USAGE_THRESHOLD)")


def oom_message(*, description: str, node_id: bytes, node_ip: str, pid: int,
                snapshot: MemorySnapshot, threshold: float) -> str:
    """What the owner of a killed task reads in its ``OutOfMemoryError``."""
    return (
        f"The {description} was killed because the node ran low on memory. "
        f"Memory on the node (IP {node_ip}, ID {node_id.hex()[:12]}) was "
        f"{_usage(snapshot)}, above the memory usage threshold of "
        f"{threshold:.2f}; the raylet killed the worker (pid {pid}) that had started last. "
        "To avoid this, run fewer such tasks at once by requesting more resources per "
        "task (`.options(num_cpus=...)` or `.options(memory=...)` in bytes), or give the "
        "node more memory. To change the threshold, set EMBER_MEMORY_USAGE_THRESHOLD "
        "(a fraction, default 0.95) when starting the cluster; "
        "EMBER_MEMORY_MONITOR_REFRESH_MS=0 turns the monitor off.")


class MemoryMonitor:
    """Checks memory on the raylet's loop; over the threshold, kills one worker.

    ``candidates()`` lists the workers that may be killed, as (Candidate,
    handle) pairs; ``kill(handle, decision, snapshot)`` kills one; ``alive(handle)``
    says whether a killed worker still runs. All three run on the loop.
    """

    def __init__(self, *, threshold: float, refresh_s: float, candidates, kill, alive,
                 read=None, cgroup: CgroupFiles | None = None):
        if not 0 < threshold <= 1:
            raise ValueError(f"EMBER_MEMORY_USAGE_THRESHOLD must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.refresh_s = refresh_s
        self._candidates = candidates
        self._kill = kill
        self._alive = alive
        # The raylet's cgroup is looked up at each check when not given: a
        # process can be moved into a cgroup (or a limit set) while it runs.
        self._read = read or (lambda: read_memory(
            cgroup if cgroup is not None else own_memory_cgroup()))
        #: The worker killed last, until it has exited.
        self._pending = None
        self._task: asyncio.Task | None = None
        self.kills = 0
        self.checks = 0
        self._check_seconds = 0.0
        self.last: MemorySnapshot | None = None

    def start(self) -> None:
        if self.refresh_s <= 0:
            logger.info("memory monitor disabled (EMBER_MEMORY_MONITOR_REFRESH_MS=0)")
            return
        snapshot = self._read()
        logger.info("memory monitor: every %.0f ms, threshold %.2f of %d bytes (%s)",
                    self.refresh_s * 1000, self.threshold, snapshot.total, snapshot.source)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a failed check must not end the monitor
                logger.exception("memory monitor check failed")

    def check(self) -> Decision | None:
        """One check: read memory and, above the threshold, kill one worker."""
        began = time.perf_counter()
        snapshot = self.last = self._read()
        self.checks += 1
        self._check_seconds += time.perf_counter() - began
        if snapshot.fraction < self.threshold:
            return None
        if self._pending is not None and self._alive(self._pending):
            return None  # the last kill has not freed its memory yet
        self._pending = None
        pairs = self._candidates()
        decision = choose_worker_to_kill([c for c, _ in pairs])
        if decision is None:
            logger.warning("memory usage %.3f is above the threshold %.2f, but no worker "
                           "runs a task or actor here to kill", snapshot.fraction,
                           self.threshold)
            return None
        handle = next(h for c, h in pairs if c is decision.victim)
        self._pending = handle
        self.kills += 1
        logger.warning("memory usage %.3f (%d of %d bytes, %s) is above the threshold %.2f: "
                       "killing the worker of %s (retry: %s) among %d candidates",
                       snapshot.fraction, snapshot.used, snapshot.total, snapshot.source,
                       self.threshold, decision.victim.description, decision.retry,
                       len(pairs))
        self._kill(handle, decision, snapshot)
        return decision

    def debug_state(self) -> dict:
        last = self.last
        return {
            "enabled": self._task is not None,
            "threshold": self.threshold,
            "refresh_ms": self.refresh_s * 1000,
            "source": last.source if last else None,
            "used": last.used if last else None,
            "total": last.total if last else None,
            "checks": self.checks,
            "mean_check_us": (self._check_seconds / self.checks * 1e6) if self.checks else 0,
            "kills": self.kills,
        }


def lease_candidates(leases) -> list[tuple[Candidate, object]]:
    """(Candidate, worker handle) for each granted lease whose worker still runs."""
    pairs = []
    for lease in leases:
        worker = lease.worker
        if worker is None or worker.process.poll() is not None:
            continue
        request = lease.request
        if request.actor_id:
            tier = Tier.ACTOR
        else:
            tier = Tier.RETRIABLE_TASK if request.retriable else Tier.TASK
        pairs.append((Candidate(worker.worker_id, tier, request.owner.worker_id,
                                lease.granted_at, request.description), worker))
    return pairs
