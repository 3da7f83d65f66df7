"""From the cluster's replies to the state API's records, and filters over them.

Pure functions of wire structs: no I/O, so each shape is tested without a
cluster. Ids are hex strings and times are milliseconds since the epoch, as
in Ray's records.
"""
from __future__ import annotations

from .. import runtime_env
from ..protocol import task_events as te
from .schemas import (PREDICATES, ActorState, JobState, NodeState, ObjectState,
                      PlacementGroupState, RuntimeEnvState, TaskState, WorkerState)


def _hex(value: bytes) -> str | None:
    return value.hex() if value else None


def _ms(seconds: float) -> int | None:
    return int(seconds * 1000) if seconds else None


def actor(info) -> ActorState:
    return ActorState(
        actor_id=info.actor_id.hex(), class_name=info.class_name, state=info.state,
        job_id=info.job_id.hex(), name=info.name or "", node_id=_hex(info.node_id),
        pid=info.pid or None, ray_namespace=info.namespace,
        death_cause={"error_message": info.death_cause} if info.death_cause else None,
        is_detached=info.is_detached, num_restarts=info.num_restarts, repr_name="")


def node(info) -> NodeState:
    return NodeState(
        node_id=info.node_id.hex(), node_ip=info.ip, is_head_node=info.is_head,
        state="ALIVE" if info.alive else "DEAD", state_message=info.death_reason or None,
        node_name=info.hostname, resources_total=dict(info.resources_total),
        labels=dict(info.labels), start_time_ms=_ms(info.start_time),
        end_time_ms=_ms(info.end_time))


def job(info) -> JobState:
    if not info.is_dead:
        status = "RUNNING"
    else:
        status = "SUCCEEDED"
    driver = info.driver_address
    return JobState(
        job_id=info.job_id.hex(), submission_id=info.submission_id or None,
        entrypoint=info.entrypoint, type="SUBMISSION" if info.submission_id else "DRIVER",
        status=status, message=None, error_type=None,
        driver_info={"id": driver.worker_id.hex(), "node_ip_address": driver.ip,
                     "pid": str(info.driver_pid)},
        start_time=_ms(info.start_time), end_time=_ms(info.end_time), metadata={},
        runtime_env={}, driver_node_id=driver.node_id.hex())


def placement_group(info) -> PlacementGroupState:
    return PlacementGroupState(
        placement_group_id=info.placement_group_id.hex(), name=info.name,
        creator_job_id=info.job_id.hex(), state=info.state,
        bundles=[{"bundle_id": f"{info.placement_group_id.hex()}_{i}",
                  "node_id": _hex(info.bundle_nodes[i]) if i < len(info.bundle_nodes) else None,
                  "unit_resources": dict(bundle)} for i, bundle in enumerate(info.bundles)],
        is_detached=info.is_detached,
        stats={"scheduling_state": info.state, "message": info.message, "strategy": info.strategy})


def worker(w) -> WorkerState:
    """A row of the GCS's worker table."""
    return WorkerState(
        worker_id=w.worker_id.hex(), is_alive=w.is_alive, worker_type=w.worker_type,
        exit_type=w.exit_type or None, node_id=w.node_id.hex(), ip=w.ip, pid=w.pid,
        exit_detail=w.exit_detail or None, start_time_ms=_ms(w.start_time),
        end_time_ms=_ms(w.end_time))


def runtime_envs(node_info, reply) -> list[RuntimeEnvState]:
    """One record per runtime env set up on the node, merged over its workers: set up
    since the first worker's setup, failed if none succeeded, in use by ``ref_cnt``."""
    merged: dict[str, list] = {}
    for w in reply.workers:
        for use in w.runtime_envs:
            row = merged.setdefault(use.serialized, [False, use.created_ms, "", 0])
            row[0] = row[0] or use.success
            row[1] = min(row[1], use.created_ms)
            row[2] = row[2] or use.error
            row[3] += use.in_use
    return [RuntimeEnvState(runtime_env=runtime_env.decode(serialized), success=ok,
                            creation_time_ms=created, node_id=node_info.node_id.hex(),
                            ref_cnt=in_use, error=None if ok else error)
            for serialized, (ok, created, error, in_use) in merged.items()]


def objects(node_info, reply) -> list[ObjectState]:
    """Every reference held on one node (one record per holder, as Ray's)."""
    stored = {oid: size for oid, size, _, _, _ in reply.stored}
    found = []
    for w in reply.workers:
        kind = "DRIVER" if w.is_driver else "WORKER"
        for ref in w.references:
            size = ref.size if ref.size >= 0 else stored.get(ref.object_id, -1)
            found.append(ObjectState(
                object_id=ref.object_id.hex(), object_size=size,
                task_status="FINISHED" if size >= 0 else "NIL", reference_type=ref.ref_type,
                call_site=ref.call_site or "disabled", type=kind, pid=w.pid, ip=node_info.ip))
    return found


def task(rec: te.TaskEventRecord, detail: bool = True) -> TaskState:
    info = rec.info
    ts = rec.state_ts
    state = te.STATE_NAMES[rec.state] if rec.state >= 0 else "NIL"
    if info is None:  # only its executor's events arrived so far
        name = func = ""
        kind, actor_id, pg, resources = te.NORMAL_TASK, b"", b"", {}
    else:
        name, func, kind = info.name, info.func_or_class_name, info.type
        actor_id, pg = info.actor_id, info.placement_group_id
        resources = info.required_resources
    created = next((t for t in ts if t), 0.0)
    end = ts[te.FAILED] or ts[te.FINISHED] if rec.state in (te.FINISHED, te.FAILED) else 0.0
    record = TaskState(
        task_id=rec.task_id.hex(), attempt_number=rec.attempt, name=name, state=state,
        job_id=rec.task_id[-4:].hex(), actor_id=_hex(actor_id), type=te.TYPE_NAMES[kind],
        func_or_class_name=func, parent_task_id=rec.parent_task_id.hex(),
        node_id=_hex(rec.node_id), worker_id=_hex(rec.worker_id),
        worker_pid=rec.worker_pid or None, error_type=rec.error_type or None)
    if detail:
        record.language = "PYTHON"
        record.required_resources = dict(resources)
        record.runtime_env_info = {}
        record.placement_group_id = _hex(pg)
        record.events = [{"state": te.STATE_NAMES[i], "created_ms": _ms(t)}
                         for i, t in sorted(enumerate(ts), key=lambda p: p[1]) if t]
        record.profiling_data = {}
        record.creation_time_ms = _ms(created)
        record.start_time_ms = _ms(ts[te.RUNNING])
        record.end_time_ms = _ms(end)
        record.error_message = rec.error_message or None
        record.is_debugger_paused = False
    return record


def _info(attr, default=None, convert=None):
    def get(rec):
        info = rec.info
        value = getattr(info, attr) if info is not None else default
        return convert(value) if convert is not None else value
    return get


#: TaskState's filterable columns read straight off a stored record, so that a
#: filtered listing converts only the records it returns (a TaskState costs
#: about 20 us to build; a store holds up to 100,000). Must agree with task().
TASK_COLUMNS = {
    "task_id": lambda r: r.task_id.hex(),
    "attempt_number": lambda r: r.attempt,
    "name": _info("name", ""),
    "state": lambda r: te.STATE_NAMES[r.state] if r.state >= 0 else "NIL",
    "job_id": lambda r: r.task_id[-4:].hex(),
    "actor_id": _info("actor_id", b"", _hex),
    "type": _info("type", te.NORMAL_TASK, te.TYPE_NAMES.__getitem__),
    "func_or_class_name": _info("func_or_class_name", ""),
    "parent_task_id": lambda r: r.parent_task_id.hex(),
    "node_id": lambda r: _hex(r.node_id),
    "worker_id": lambda r: _hex(r.worker_id),
    "worker_pid": lambda r: r.worker_pid or None,
    "error_type": lambda r: r.error_type or None,
    "language": lambda r: "PYTHON",
    "placement_group_id": _info("placement_group_id", b"", _hex),
    "is_debugger_paused": lambda r: False,
}


def select_task_records(recs, filters, limit: int | None) -> list:
    """The stored task records passing ``filters`` (checked), at most ``limit``."""
    getters = [(TASK_COLUMNS[key], predicate == "=", value) for key, predicate, value in filters]
    found = []
    for rec in recs:
        if all((_norm(get(rec)) == value) == equal for get, equal, value in getters):
            found.append(rec)
            if limit and len(found) >= limit:
                break
    return found


def count_task_records(recs) -> list[tuple[str, int, int, int]]:
    """``(func_or_class_name, type, state, attempts)`` rows over stored records."""
    counts: dict[tuple, int] = {}
    for rec in recs:
        info = rec.info
        key = ((info.func_or_class_name, info.type) if info is not None else ("", 0), rec.state)
        counts[key] = counts.get(key, 0) + 1
    return [(func, kind, state, n) for ((func, kind), state), n in counts.items()]


# --- filters --------------------------------------------------------------------------

def check_filters(resource: str, schema, filters) -> list[tuple[str, str, str]]:
    """Validate ``[(key, predicate, value)]`` for ``schema``; raises ValueError naming
    the wrong part and the valid choices."""
    checked = []
    valid = sorted(schema.filterable_columns())
    for item in filters or []:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"Malformed filter {item!r}: expected (key, predicate, value) "
                             f"with predicate one of {', '.join(PREDICATES)}, e.g. "
                             "('state', '=', 'ALIVE').")
        key, predicate, value = item
        if key not in valid:
            raise ValueError(f"Unknown filter key {key!r} for {resource}; valid keys: "
                             f"{', '.join(valid)}.")
        if predicate not in PREDICATES:
            raise ValueError(f"Unknown filter predicate {predicate!r} in {item!r}; valid "
                             f"predicates: {', '.join(PREDICATES)}.")
        checked.append((key, predicate, _norm(value)))
    return checked


def _norm(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).lower()


def matches(record, filters) -> bool:
    for key, predicate, value in filters:
        equal = _norm(getattr(record, key)) == value
        if equal != (predicate == "="):
            return False
    return True


def select(records, filters, limit: int | None):
    """``(the records passing filters, at most limit of them; how many passed)``."""
    passed = [r for r in records if matches(r, filters)] if filters else list(records)
    total = len(passed)
    return (passed if not limit else passed[:limit]), total


def trim(record, detail: bool) -> object:
    """The record with its detail-only columns emptied when ``detail`` is False."""
    if not detail:
        base = record.base_columns()
        for name in record.columns() - base:
            setattr(record, name, None)
    return record
