"""One typed configuration for every ember process.

Each field has a default here and can be overridden by an environment variable
named ``EMBER_<FIELD NAME IN UPPER CASE>``. Child processes (gcs, raylet,
workers) inherit the environment of whoever started them, so setting a variable
before ``ember.init()`` or ``ember start`` reaches the whole local cluster.

Why environment variables and not a config file: tests and users need to tune
one knob for one run (a short health-check timeout, a bigger lease pipeline)
without writing files, and Ray users already know the ``RAY_<name>`` habit.
"""
from __future__ import annotations

import dataclasses
import os
import typing


@dataclasses.dataclass
class Config:
    # --- rpc -------------------------------------------------------------
    #: Seconds a client keeps retrying to connect before it gives up.
    connect_timeout_s: float = 30.0
    #: First retry delay when a connection attempt fails; doubles each time.
    connect_backoff_initial_s: float = 0.005
    connect_backoff_max_s: float = 0.5
    #: Largest frame a connection accepts (a message envelope, or one raw
    #: buffer such as an object chunk), checked from its header before any
    #: memory is set aside; a larger one closes the connection. Must exceed
    #: ``object_transfer_chunk_size``.
    max_frame_bytes: int = 64 * 1024**2
    #: Open connections one server accepts; more are closed at once.
    max_connections_per_server: int = 10000
    #: Connections that have not finished the handshake, per server.
    max_unauthenticated_connections: int = 128
    #: Seconds a new connection has to present its handshake (cluster token).
    handshake_timeout_s: float = 5.0

    # --- gcs -------------------------------------------------------------
    #: How often the GCS pings each raylet.
    health_check_period_s: float = 1.0
    #: How long a raylet may stay silent before the GCS declares its node dead.
    health_check_timeout_s: float = 30.0
    #: "memory", or a Redis URL for GCS fault tolerance: "redis://[:password@]host:port[/db]",
    #: "rediss://..." (TLS) or "redis+sentinel://..." (see gcs/redis_store.py).
    gcs_storage: str = "memory"
    #: Separates the tables of clusters that share one Redis; a restarted GCS
    #: must use the same namespace to find its tables.
    gcs_storage_namespace: str = "default"
    #: How long raylets and core workers keep trying to reach a GCS that went
    #: away (it may be restarting) before they give up, as Ray's
    #: gcs_rpc_server_reconnect_timeout_s. A raylet then stops.
    gcs_reconnect_timeout_s: float = 60.0

    # --- raylet ----------------------------------------------------------
    #: Fork workers from a pre-imported zygote process instead of spawning them.
    use_zygote: bool = True
    #: Workers started ahead of demand; -1 means num_cpus.
    num_prestart_workers: int = -1
    #: Idle workers above this number are reaped after ``idle_worker_timeout_s``.
    idle_worker_soft_limit: int = -1
    idle_worker_timeout_s: float = 60.0
    #: How long a worker has to register before the raylet gives up on it.
    worker_register_timeout_s: float = 30.0
    #: How often the raylet reads worker log files for lines to send to drivers.
    log_poll_period_s: float = 0.1
    #: How long to wait between reports of resource availability to the GCS.
    resource_report_period_s: float = 0.1
    #: How often a raylet checks whether it is idle (no leases, bundles or
    #: primary objects), for the autoscaler; it reports only changes.
    autoscaler_usage_period_s: float = 0.5
    #: Fraction of local utilisation above which the hybrid policy spreads.
    scheduler_spread_threshold: float = 0.5
    #: How often the raylet's memory monitor checks the node's memory (and its
    #: cgroup's); 0 turns it off. As Ray's memory_monitor_refresh_ms.
    memory_monitor_refresh_ms: int = 250
    #: Fraction of the memory (node or cgroup) above which the monitor kills a
    #: worker. As Ray's memory_usage_threshold.
    memory_usage_threshold: float = 0.95
    #: oom_score_adj of workers: the kernel's OOM killer takes them first.
    worker_oom_score_adj: int = 1000
    #: oom_score_adj the GCS and raylets set for themselves, if allowed (lowering
    #: it needs CAP_SYS_RESOURCE; without it they keep what they inherited).
    system_oom_score_adj: int = -500

    # --- core worker -----------------------------------------------------
    #: Tasks pushed to one leased worker before waiting for a reply, for
    #: tasks that run shorter than ``pipeline_max_task_duration_s``; longer
    #: ones go one at a time so that they spread over workers.
    max_tasks_in_flight_per_worker: int = 8
    pipeline_max_task_duration_s: float = 0.002
    #: Lease requests outstanding at once per scheduling key.
    max_pending_lease_requests: int = 10
    #: An idle lease is kept this long before it is returned to the raylet,
    #: so that a tight submit/get loop does not pay a lease per task.
    lease_idle_timeout_s: float = 0.05
    #: Values smaller than this travel inline; larger ones go to the object store.
    max_direct_call_object_size: int = 100 * 1024
    #: Record where each ObjectRef was created, for ``ember memory`` (costs time).
    record_ref_creation_sites: bool = False
    #: Seconds between reminders that a task cannot be scheduled.
    infeasible_warning_period_s: float = 10.0
    #: Retries of a task whose worker the memory monitor killed, apart from its
    #: max_retries; -1 retries without limit (Ray's task_oom_retries default).
    task_oom_retries: int = -1
    #: First delay before such a retry; it doubles per OOM kill, up to a minute.
    task_oom_retry_delay_base_ms: int = 1000

    #: CPython's first collection threshold in every ember process, drivers too
    #: (allocations between collections of the youngest objects; Python's default
    #: is 700); 0 leaves the collector as Python sets it. See process_setup.tune_gc.
    gc_gen0_threshold: int = 7000

    # --- object store ----------------------------------------------------
    #: Cap for the default store size (30% of RAM).
    object_store_memory_cap: int = 200 * 1024**3
    #: Bytes per request when an object is copied between nodes: large enough
    #: that per-request costs vanish, small enough to keep several in flight.
    object_transfer_chunk_size: int = 8 * 1024**2
    #: Chunk requests outstanding at once per transfer, so the link never idles.
    object_transfer_chunks_in_flight: int = 4
    #: Copy objects between nodes on one machine through shared memory (one
    #: memcpy) rather than TCP; see ember.object_store.object_manager.
    object_transfer_same_host: bool = True
    #: How long a raylet tries to reach another node's raylet to pull an object.
    object_transfer_connect_timeout_s: float = 5.0

    # --- observability (task events, metrics) -----------------------------
    #: Record task state changes and send them to the GCS (``ember list tasks``,
    #: ``ember timeline``). As Ray's ``task_events_report_interval_ms > 0``.
    task_events_enabled: bool = True
    #: How often each process flushes its buffered task events to the GCS.
    task_events_report_interval_ms: int = 1000
    #: Events a process buffers between flushes before it drops (and counts) more.
    task_events_max_buffer_size: int = 100_000
    #: Task attempts the GCS keeps; past it the oldest finished are dropped
    #: first (Ray's ``task_events_max_num_task_in_gcs``).
    task_events_max_num_task_in_gcs: int = 100_000
    #: Seconds after a job finishes that its task events are dropped.
    task_events_finished_job_ttl_s: float = 600.0
    #: Dead workers the GCS's worker table keeps (the oldest dropped first), for
    #: ``list_workers`` to show how they ended.
    maximum_gcs_dead_worker_cached_count: int = 1000
    #: Port of each node's Prometheus ``/metrics`` endpoint, on the node's IP:
    #: -1 serves none, 0 a free port (written to the session directory).
    #: ``ember start --metrics-export-port`` (and ``init(_metrics_export_port=)``)
    #: override it for the node they start.
    metrics_export_port: int = -1
    #: How often a process reports its user metrics to its raylet.
    metrics_report_interval_ms: int = 1000

    # --- sessions --------------------------------------------------------
    temp_dir: str = "/tmp/ember"
    #: Point ``<temp_dir>/session_latest`` at each new session. The benchmark
    #: turns it off, to leave it on the cluster a user runs.
    update_session_latest: bool = True

    def __post_init__(self) -> None:
        if self.object_transfer_chunk_size > self.max_frame_bytes:
            raise ValueError(
                f"object_transfer_chunk_size ({self.object_transfer_chunk_size}) must not "
                f"exceed max_frame_bytes ({self.max_frame_bytes}): a chunk travels as one "
                "frame. Lower EMBER_OBJECT_TRANSFER_CHUNK_SIZE or raise EMBER_MAX_FRAME_BYTES.")

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] = os.environ) -> "Config":
        """Build a config from defaults overridden by ``EMBER_<NAME>`` variables."""
        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get("EMBER_" + field.name.upper())
            if raw is None:
                continue
            kind = hints[field.name]
            try:
                values[field.name] = _parse(kind, raw)
            except ValueError as exc:
                raise ValueError(
                    f"Environment variable EMBER_{field.name.upper()}={raw!r} is not a valid "
                    f"{kind.__name__}: {exc}"
                ) from None
        return cls(**values)


def _parse(kind, raw: str):
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true/false")
    return kind(raw)


#: The configuration of this process, read once at import.
config = Config.from_env()
