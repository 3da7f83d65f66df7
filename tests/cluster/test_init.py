"""ember.init / shutdown / is_initialized: starting a local cluster and leaving nothing behind."""
from __future__ import annotations

import glob
import logging
import os
import signal

import psutil
import pytest

import ember as ray
from ember.config import config as ray_config
from helpers import (DriverProcess, ember_processes, ember_shm_entries, run_driver,
                     wait_for_condition, wait_no_ember_processes)


def test_import_as_ray_exposes_the_core_api():
    for name in ("init", "shutdown", "is_initialized", "remote", "get", "put", "wait",
                 "cancel", "nodes", "cluster_resources", "available_resources",
                 "get_gpu_ids", "get_runtime_context", "ObjectRef", "ObjectRefGenerator"):
        assert hasattr(ray, name), name
    assert issubclass(ray.exceptions.RayTaskError, ray.exceptions.RayError)


def test_init_starts_a_cluster_and_shutdown_ends_it(fresh, temp_root):
    shm_before = ember_shm_entries()
    assert not ray.is_initialized()
    ctx = fresh(num_cpus=2)
    assert ray.is_initialized()

    @ray.remote
    def double(x):
        return 2 * x
    assert ray.get(double.remote(21)) == 42
    big = ray.put(b"x" * (8 * 1024 * 1024))  # large enough for the shared-memory store
    assert len(ray.get(big)) == 8 * 1024 * 1024

    session_dir = ctx["session_dir"]
    assert session_dir.startswith(temp_root)
    assert ember_processes(session_dir), "init started no process"
    ray.shutdown()
    assert not ray.is_initialized()
    wait_no_ember_processes(session_dir)
    assert ember_shm_entries() <= shm_before


def test_init_accepts_resource_arguments(fresh):
    store = 80 * 1024 * 1024
    fresh(num_cpus=3, num_gpus=2, resources={"custom": 4, "half": 0.5},
          object_store_memory=store)
    total = ray.cluster_resources()
    assert total["CPU"] == 3
    assert total["GPU"] == 2
    assert total["custom"] == 4
    assert total["half"] == 0.5
    assert total["object_store_memory"] == store


def test_session_dir_has_logs_of_every_process(fresh):
    ctx = fresh(num_cpus=1)

    @ray.remote
    def hello():
        print("written to the worker's log")
        return os.getpid()
    pid = ray.get(hello.remote())
    logs = os.path.join(ctx["session_dir"], "logs")
    names = os.listdir(logs)
    assert any(n.startswith("gcs") for n in names), names
    assert any(n.startswith("raylet") for n in names), names
    assert any(n.startswith("worker") and n.endswith(".out") for n in names), names
    assert any(n.startswith("worker") and n.endswith(".err") for n in names), names

    def printed():
        for path in glob.glob(os.path.join(logs, "worker-*.out")):
            with open(path) as f:
                if "written to the worker's log" in f.read():
                    return True
        return False
    wait_for_condition(printed, message="the task's print in a worker log file")
    assert pid != os.getpid()
    latest = os.path.join(os.path.dirname(ctx["session_dir"]), "session_latest")
    assert os.path.realpath(latest) == os.path.realpath(ctx["session_dir"])


def test_init_twice_raises_unless_ignore_reinit_error(fresh):
    fresh(num_cpus=1)
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        ray.init(num_cpus=1)
    info = ray.init(ignore_reinit_error=True)
    assert info["session_dir"]
    assert ray.is_initialized()

    @ray.remote
    def one():
        return 1
    assert ray.get(one.remote()) == 1


def test_namespace_is_seen_by_driver_and_tasks(fresh):
    fresh(num_cpus=1, namespace="my_namespace")
    assert ray.get_runtime_context().namespace == "my_namespace"

    @ray.remote
    def task_namespace():
        return ray.get_runtime_context().namespace
    assert ray.get(task_namespace.remote()) == "my_namespace"


def test_logging_level_sets_the_ember_logger(fresh):
    fresh(num_cpus=1, logging_level=logging.WARNING)
    assert logging.getLogger("ember").getEffectiveLevel() == logging.WARNING


def test_logging_level_controls_what_the_driver_logs(tmp_path):
    code = """
        import logging, ember as ray
        ray.init(num_cpus=1, logging_level=logging.{level})
        ray.init(ignore_reinit_error=True)
        ray.shutdown()
    """
    verbose = run_driver(tmp_path, code.format(level="INFO"))
    assert verbose.returncode == 0, verbose.stderr
    assert "already been called" in verbose.stderr
    quiet = run_driver(tmp_path, code.format(level="WARNING"))
    assert quiet.returncode == 0, quiet.stderr
    assert "already been called" not in quiet.stderr


def test_init_as_context_manager_shuts_down(temp_root):
    with ray.init(num_cpus=1) as ctx:
        assert ray.is_initialized()
        session_dir = ctx["session_dir"]
    assert not ray.is_initialized()
    wait_no_ember_processes(session_dir)


def test_shutdown_without_init_is_harmless():
    ray.shutdown()
    assert not ray.is_initialized()


DRIVER_REPORTS_SESSION = """
import os, sys, ember as ray
ctx = ray.init(num_cpus=2)


@ray.remote
def pid():
    return os.getpid()


worker_pid = ray.get(pid.remote())
big = ray.put(b"x" * (8 * 1024 * 1024))  # large enough for the shared-memory store
print("SESSION", ctx["session_dir"], worker_pid, flush=True)
"""


def _session_line(driver: DriverProcess) -> tuple[str, int]:
    line = driver.wait_for_line(lambda s: s.startswith("SESSION "))
    _, session_dir, worker_pid = line.split()
    return session_dir, int(worker_pid)


def test_driver_exit_without_shutdown_leaves_nothing(tmp_path):
    driver = DriverProcess(tmp_path, DRIVER_REPORTS_SESSION + "sys.stdin.read()\n")
    try:
        session_dir, worker_pid = _session_line(driver)
        assert ember_processes(session_dir)
        assert psutil.pid_exists(worker_pid)
        _, err = driver.finish()
        assert driver.proc.returncode == 0, err
        wait_no_ember_processes(session_dir)
    finally:
        driver.kill()


def test_driver_killed_with_sigkill_leaves_nothing(tmp_path):
    shm_before = ember_shm_entries()
    driver = DriverProcess(tmp_path, DRIVER_REPORTS_SESSION + "sys.stdin.read()\n")
    try:
        session_dir, worker_pid = _session_line(driver)
        assert ember_processes(session_dir)
        driver.proc.send_signal(signal.SIGKILL)
        driver.proc.wait(10)
        wait_no_ember_processes(session_dir)
        assert ember_shm_entries() <= shm_before
        assert not psutil.pid_exists(worker_pid) or \
            psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        driver.kill()


def test_driver_exception_exit_leaves_nothing(tmp_path):
    result = run_driver(tmp_path, DRIVER_REPORTS_SESSION + "raise SystemExit(3)\n")
    assert result.returncode == 3, result.stderr
    session_dir = result.stdout.split()[1]
    wait_no_ember_processes(session_dir)


def test_is_initialized_false_in_a_new_process(tmp_path):
    result = run_driver(tmp_path, """
        import ember as ray
        assert not ray.is_initialized()
        ray.init(num_cpus=1)
        assert ray.is_initialized()
        ray.shutdown()
        assert not ray.is_initialized()
        ray.init(num_cpus=1)   # a second cluster after shutdown works
        assert ray.get(ray.put("again")) == "again"
        ray.shutdown()
        print("OK")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_workers_collect_cycles_less_often_and_keep_their_startup_out_of_scans(shared):
    """Every ember process raises the collector's first threshold (process_setup.tune_gc;
    that cycles are still collected is tests/unit/ember/test_process_setup.py's), a
    driver too; a worker also freezes what its startup made."""
    import gc

    @ray.remote
    def collector():
        return gc.get_threshold()[0], gc.get_freeze_count()

    threshold, frozen = ray.get(collector.remote())
    assert threshold == ray_config.gc_gen0_threshold > 700
    assert frozen > 1000
    assert gc.get_threshold()[0] >= ray_config.gc_gen0_threshold  # the driver's
