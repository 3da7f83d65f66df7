"""``ember.util.state``: list, get and summarize what runs in a cluster, as ``ray.util.state``.

Every function takes Ray's arguments (``address``, ``filters``, ``limit``,
``timeout``, ``detail``, ``raise_on_missing_output``) and returns Ray-shaped
records (:mod:`.common`). Tasks come from the GCS's task-event store, actors,
nodes, jobs and placement groups from the GCS's tables, workers and objects
from every raylet, which asks its workers (the same source as ``ember memory``).
Works from a driver, inside tasks and actors, and from any process that passes
``address`` (or finds the cluster ``ember start`` recorded).
"""
from __future__ import annotations

import logging
import os
import warnings

from ...observability import cluster, logs as logfiles, records, summary
from ...protocol import gcs as gcs_msg
from ...protocol import raylet as rl
from ...protocol import task_events as te
from ...observability.schemas import (DEFAULT_LIMIT, DEFAULT_RPC_TIMEOUT, RESOURCES, ActorState, JobState,
                     NodeState, ObjectState, PlacementGroupState, RuntimeEnvState, TaskState,
                     WorkerState)
from ...observability.errors import RayStateApiException

logger = logging.getLogger(__name__)


# --- fetching ---------------------------------------------------------------------------

_gcs = cluster.query_gcs
fetch_task_events = cluster.fetch_task_events


def _per_node(address, timeout, raise_on_missing_output, convert) -> list:
    """``convert(node_info, GetMemoryInfoReply)`` over every live node's raylet."""
    table, replies = cluster.run(cluster.ask_raylets, cluster.resolve_address(address),
                                 rl.GetMemoryInfo(), timeout)
    found, missing = [], []
    for info in table.nodes:
        if not info.alive:
            continue
        reply = replies.get(info.node_id)
        if reply is None:
            missing.append(f"{info.node_id.hex()} ({info.ip})")
        else:
            found += convert(info, reply)
    if missing:
        text = f"Nodes did not answer the query, their data is missing: {', '.join(missing)}"
        if raise_on_missing_output:
            raise RayStateApiException(text + ". Pass raise_on_missing_output=False to get "
                                       "the rest.")
        warnings.warn(text)
    return found


def _listing(resource, schema, rows, filters, limit, detail):
    checked = records.check_filters(resource, schema, filters)
    selected, total = records.select(rows, checked, limit)
    if limit and total > limit:
        logger.info("%d of %d %s shown (limit=%d); pass a larger limit to see more.",
                    len(selected), total, resource, limit)
    return [records.trim(r, detail) for r in selected]


def _warn_dropped(reply: te.GetTaskEventsReply) -> None:
    if reply.num_status_task_events_dropped or reply.num_profile_events_dropped:
        logger.warning(
            "%d task attempts were dropped from the GCS's task-event store (and %d events "
            "by workers): the oldest finished go first past task_events_max_num_task_in_gcs "
            "(EMBER_TASK_EVENTS_MAX_NUM_TASK_IN_GCS).", reply.num_status_task_events_dropped,
            reply.num_profile_events_dropped)


# --- list ------------------------------------------------------------------------------

def list_actors(address=None, filters=None, limit: int = DEFAULT_LIMIT,
                timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
                raise_on_missing_output: bool = True, _explain: bool = False) -> list[ActorState]:
    records.check_filters("actors", ActorState, filters)
    (reply,) = _gcs(address, [gcs_msg.ListActors()], timeout)
    return _listing("actors", ActorState, [records.actor(a) for a in reply.actors], filters,
                    limit, detail)


def list_tasks(address=None, filters=None, limit: int = DEFAULT_LIMIT,
               timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
               raise_on_missing_output: bool = True, _explain: bool = False) -> list[TaskState]:
    checked = records.check_filters("tasks", TaskState, filters)
    # Filters the GCS can apply itself narrow what travels; with no other
    # filter, the limit can be applied there too.
    request = te.GetTaskEvents()
    rest = []
    for key, predicate, value in checked:
        if predicate == "=" and key in ("job_id", "task_id", "actor_id"):
            try:
                setattr(request, key, bytes.fromhex(value))
                continue
            except ValueError:
                return []  # not an id: nothing can match
        rest.append((key, predicate, value))
    request.filters = rest  # applied in the GCS, before the limit: only the answer travels
    request.limit = limit or 0
    reply = fetch_task_events(address, timeout, request)
    _warn_dropped(reply)
    return [records.trim(records.task(rec, detail), detail) for rec in reply.tasks]


def list_objects(address=None, filters=None, limit: int = DEFAULT_LIMIT,
                 timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
                 raise_on_missing_output: bool = True, _explain: bool = False) -> list[ObjectState]:
    records.check_filters("objects", ObjectState, filters)
    rows = _per_node(address, timeout, raise_on_missing_output, records.objects)
    return _listing("objects", ObjectState, rows, filters, limit, detail)


def list_nodes(address=None, filters=None, limit: int = DEFAULT_LIMIT,
               timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
               raise_on_missing_output: bool = True, _explain: bool = False) -> list[NodeState]:
    records.check_filters("nodes", NodeState, filters)
    (reply,) = _gcs(address, [gcs_msg.GetAllNodes()], timeout)
    return _listing("nodes", NodeState, [records.node(n) for n in reply.nodes], filters, limit,
                    detail)


def list_workers(address=None, filters=None, limit: int = DEFAULT_LIMIT,
                 timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
                 raise_on_missing_output: bool = True, _explain: bool = False) -> list[WorkerState]:
    """Workers and drivers, alive and recently dead, from the GCS's worker table."""
    records.check_filters("workers", WorkerState, filters)
    (reply,) = _gcs(address, [gcs_msg.GetAllWorkerInfo()], timeout)
    return _listing("workers", WorkerState, [records.worker(w) for w in reply.workers],
                    filters, limit, detail)


def list_jobs(address=None, filters=None, limit: int = DEFAULT_LIMIT,
              timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
              raise_on_missing_output: bool = True, _explain: bool = False) -> list[JobState]:
    records.check_filters("jobs", JobState, filters)
    (reply,) = _gcs(address, [gcs_msg.GetAllJobs()], timeout)
    return _listing("jobs", JobState, [records.job(j) for j in reply.jobs], filters, limit,
                    detail)


def list_placement_groups(address=None, filters=None, limit: int = DEFAULT_LIMIT,
                          timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
                          raise_on_missing_output: bool = True,
                          _explain: bool = False) -> list[PlacementGroupState]:
    records.check_filters("placement-groups", PlacementGroupState, filters)
    (reply,) = _gcs(address, [gcs_msg.GetAllPlacementGroups()], timeout)
    return _listing("placement-groups", PlacementGroupState,
                    [records.placement_group(p) for p in reply.groups], filters,
                    limit, detail)


def list_runtime_envs(address=None, filters=None, limit: int = DEFAULT_LIMIT,
                      timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False,
                      raise_on_missing_output: bool = True,
                      _explain: bool = False) -> list[RuntimeEnvState]:
    """The runtime envs workers have set up, one record per env and node.

    Workers set envs up themselves (there is no per-node agent), so each node's
    raylet gathers them from its workers.
    """
    records.check_filters("runtime-envs", RuntimeEnvState, filters)
    rows = _per_node(address, timeout, raise_on_missing_output, records.runtime_envs)
    return _listing("runtime-envs", RuntimeEnvState, rows, filters, limit, detail)


# --- get ---------------------------------------------------------------------------------

def _one(rows):
    return rows[0] if rows else None


def get_actor(id: str, address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
              _explain: bool = False) -> ActorState | None:
    return _one(list_actors(address, [("actor_id", "=", id)], limit=1, timeout=timeout,
                            detail=True))


def get_node(id: str, address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
             _explain: bool = False) -> NodeState | None:
    return _one(list_nodes(address, [("node_id", "=", id)], limit=1, timeout=timeout,
                           detail=True))


def get_worker(id: str, address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
               _explain: bool = False) -> WorkerState | None:
    return _one(list_workers(address, [("worker_id", "=", id)], limit=1, timeout=timeout,
                             detail=True, raise_on_missing_output=False))


def get_placement_group(id: str, address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
                        _explain: bool = False) -> PlacementGroupState | None:
    return _one(list_placement_groups(address, [("placement_group_id", "=", id)], limit=1,
                                      timeout=timeout, detail=True))


def get_task(id, address=None, timeout: int = DEFAULT_RPC_TIMEOUT, _explain: bool = False):
    """The task's attempt (a list of them, newest first, if it was retried); None if unknown.

    ``id`` is a task id in hex, or an ObjectRef the task returns."""
    if not isinstance(id, str):
        from ...ids import task_id_of
        id = task_id_of(id.binary()).hex()
    rows = list_tasks(address, [("task_id", "=", id)], limit=0, timeout=timeout, detail=True)
    if not rows:
        return None
    return rows[0] if len(rows) == 1 else rows


def get_objects(id: str, address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
                _explain: bool = False) -> list[ObjectState]:
    """Every reference to the object, one record per holder (empty if none)."""
    return list_objects(address, [("object_id", "=", id)], limit=0, timeout=timeout,
                        detail=True, raise_on_missing_output=False)


# --- summaries -----------------------------------------------------------------------------

def summarize_tasks(address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
                    raise_on_missing_output: bool = True, _explain: bool = False) -> dict:
    reply = fetch_task_events(address, timeout, te.GetTaskEvents(summary=True))
    _warn_dropped(reply)
    return summary.summarize_task_counts(reply.summary)


def summarize_actors(address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
                     raise_on_missing_output: bool = True, _explain: bool = False) -> dict:
    return summary.summarize_actors(list_actors(address, limit=0, timeout=timeout))


def summarize_objects(address=None, timeout: int = DEFAULT_RPC_TIMEOUT,
                      raise_on_missing_output: bool = True, _explain: bool = False) -> dict:
    return summary.summarize_objects(list_objects(
        address, limit=0, timeout=timeout, raise_on_missing_output=raise_on_missing_output))


# --- logs ------------------------------------------------------------------------------------

def _node_info(address, node_id, node_ip, timeout):
    (reply,) = _gcs(address, [gcs_msg.GetAllNodes()], timeout)
    alive = [n for n in reply.nodes if n.alive]
    if node_id:
        found = [n for n in reply.nodes if n.node_id.hex() == node_id]
    elif node_ip:
        found = [n for n in alive if n.ip == node_ip]
    else:
        found = [n for n in alive if n.is_head] or alive
    if not found:
        valid = ", ".join(f"{n.node_id.hex()} ({n.ip})" for n in alive) or "none"
        raise ValueError(f"No node with {'id ' + node_id if node_id else 'ip ' + str(node_ip)}"
                         f" in the cluster; alive nodes: {valid}.")
    return found[0], reply.nodes


def list_logs(address=None, node_id: str | None = None, node_ip: str | None = None,
              glob_filter: str = "*", timeout: int = DEFAULT_RPC_TIMEOUT,
              detail: bool = False, _interval=None) -> dict[str, list[str]]:
    """Log file names on one node (the head by default), grouped as Ray's are."""
    info, _ = _node_info(address, node_id, node_ip, timeout)
    return logfiles.list_files(info, glob_filter, timeout)


def get_log(address=None, node_id: str | None = None, node_ip: str | None = None,
            filename: str | None = None, actor_id: str | None = None,
            task_id: str | None = None, pid: int | None = None, follow: bool = False,
            tail: int = 1000, timeout: int = DEFAULT_RPC_TIMEOUT, suffix: str = "out",
            encoding: str = "utf-8", errors: str = "strict", submission_id=None,
            attempt_number: int = 0, _interval=None):
    """The lines of one log file: by name, or the worker log of an actor, a task or a pid."""
    info, name = find_log_file(address, node_id, node_ip, filename, actor_id, task_id, pid,
                               timeout, suffix, attempt_number)
    yield from logfiles.read_lines(info, name, tail, follow, timeout=timeout)


def find_log_file(address=None, node_id: str | None = None, node_ip: str | None = None,
                  filename: str | None = None, actor_id: str | None = None,
                  task_id: str | None = None, pid: int | None = None,
                  timeout: int = DEFAULT_RPC_TIMEOUT, suffix: str = "out",
                  attempt_number: int = 0) -> tuple:
    """The node and the name of the log file :func:`get_log` reads (the dashboard
    streams it too), checked to exist there.

    ``filename`` must name a file of the node's log directory itself: the
    dashboard passes it from a URL, and no name may reach outside that
    directory."""
    if not (filename or actor_id or task_id or pid):
        raise ValueError("None of filename, actor_id, task_id or pid is given; one of them "
                         "names the log to read.")
    if filename and (os.path.basename(filename) != filename or filename in (".", "..")):
        raise ValueError(f"Invalid log file name {filename!r}: give a name from list_logs, "
                         "without a directory.")
    worker_id = None
    if actor_id:
        actor = get_actor(actor_id, address, timeout)
        if actor is None or not actor.pid:
            raise ValueError(f"No actor with id {actor_id} has run in the cluster.")
        worker_id, node_id = _actor_worker(address, actor_id, timeout), actor.node_id
    elif task_id:
        attempts = list_tasks(address, [("task_id", "=", task_id)], limit=0, timeout=timeout)
        ran = [t for t in attempts if t.attempt_number == attempt_number and t.worker_id]
        if not ran:
            raise ValueError(f"No attempt {attempt_number} of task {task_id} has run (the task "
                             "is unknown, or has not started yet).")
        worker_id, node_id = bytes.fromhex(ran[0].worker_id), ran[0].node_id
    elif pid:
        found = list_workers(address, [("pid", "=", pid)], limit=0, timeout=timeout)
        if not found:
            raise ValueError(f"No worker with pid {pid} has run in the cluster.")
        newest = found[-1]  # a pid may have been used again: the latest process
        worker_id, node_id = bytes.fromhex(newest.worker_id), newest.node_id
    info, _ = _node_info(address, node_id, node_ip, timeout)
    name = filename or logfiles.worker_log_name(worker_id, suffix)
    known = sorted(n for names in logfiles.list_files(info, timeout=timeout).values()
                   for n in names)
    if name not in known:
        raise ValueError(f"No log file {name!r} on node {info.node_id.hex()}; files there: "
                         f"{', '.join(known)}.")
    return info, name


def _actor_worker(address, actor_id: str, timeout) -> bytes:
    (reply,) = _gcs(address, [gcs_msg.GetActorInfo(bytes.fromhex(actor_id))], timeout)
    info = reply.info
    return info.address.worker_id if info is not None and info.address is not None else b""
