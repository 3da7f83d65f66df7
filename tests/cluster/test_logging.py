"""Worker output at the driver: ``(f pid=123) hello``, stderr, task names, log_to_driver."""
from __future__ import annotations

import glob
import os
import re
import time

from helpers import DriverProcess, wait_for_condition

PRINTING_DRIVER = """
    import os, sys, ember as ray
    ctx = ray.init(num_cpus=2{init_args})

    @ray.remote
    def f(x):
        print("hello", x)
        print("second line", x)
        return os.getpid()

    @ray.remote
    def complain():
        print("to stderr", file=sys.stderr)
        return os.getpid()

    pids = ray.get([f.remote(1), f.options(name="custom_name").remote(2)])
    err_pid = ray.get(complain.remote())
    print("PIDS", os.getpid(), pids[0], pids[1], err_pid, flush=True)
    print("SESSION", ctx["session_dir"], flush=True)
    sys.stdin.read()
"""


def _pids(driver: DriverProcess):
    line = driver.wait_for_line(lambda s: s.startswith("PIDS "))
    return [int(p) for p in line.split()[1:]]


def test_task_prints_appear_at_driver_with_prefix(tmp_path):
    driver = DriverProcess(tmp_path, PRINTING_DRIVER.format(init_args=""))
    try:
        driver_pid, f_pid, named_pid, err_pid = _pids(driver)
        assert f_pid != driver_pid
        driver.wait_for_line(lambda s: s == f"(f pid={f_pid}) hello 1")
        driver.wait_for_line(lambda s: s == f"(f pid={f_pid}) second line 1")
        driver.wait_for_line(lambda s: s == f"(custom_name pid={named_pid}) hello 2")
        wait_for_condition(lambda: f"(complain pid={err_pid}) to stderr" in driver.stderr,
                           timeout=30, message="the task's stderr line at the driver's stderr")
        out, err = driver.finish()
        assert driver.proc.returncode == 0, err
    finally:
        driver.kill()
    # stderr lines go to stderr only, stdout lines to stdout only.
    assert "to stderr" not in out
    assert "hello" not in err
    # Each line is printed once.
    assert out.count(f"(f pid={f_pid}) hello 1") == 1


def test_log_to_driver_false_keeps_worker_output_in_the_logs(tmp_path):
    driver = DriverProcess(tmp_path, PRINTING_DRIVER.format(init_args=", log_to_driver=False"))
    try:
        _pids(driver)
        session_dir = driver.wait_for_line(lambda s: s.startswith("SESSION ")).split()[1]

        # The line reached the worker's log file; the monitor polls every 0.1 s, so
        # a second beyond that it would have been forwarded if it were going to be.
        def logged():
            for path in glob.glob(os.path.join(session_dir, "logs", "worker-*.out")):
                with open(path) as f:
                    if "hello 1" in f.read():
                        return True
            return False
        wait_for_condition(logged, message="the print in the worker's log file")
        time.sleep(1.0)
        out, err = driver.finish()
        assert driver.proc.returncode == 0, err
    finally:
        driver.kill()
    assert "hello" not in out
    assert "to stderr" not in err


def test_prints_from_many_tasks_all_arrive(tmp_path):
    driver = DriverProcess(tmp_path, """
        import sys, ember as ray
        ray.init(num_cpus=2)

        @ray.remote
        def shout(i):
            print(f"line-{i}")
        ray.get([shout.remote(i) for i in range(30)])
        print("DONE", flush=True)
        sys.stdin.read()
    """)
    try:
        driver.wait_for_line(lambda s: s == "DONE")
        pattern = re.compile(r"^\(shout pid=\d+\) line-(\d+)$")

        def all_arrived():
            seen = {m.group(1) for m in map(pattern.match, driver.snapshot()) if m}
            return seen == {str(i) for i in range(30)}
        wait_for_condition(all_arrived, timeout=30, message="all 30 printed lines")
        driver.finish()
    finally:
        driver.kill()
