"""The job launcher: a job's processes never outlive its supervisor, nor a stop.

Real processes, no cluster: a stand-in supervisor starts the launcher as
ember's does (``job_supervisor.py``), then dies or stops the job.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from ember.dashboard import job_supervisor

pytestmark = pytest.mark.timeout(60)

#: A job of two processes: one that ignores SIGTERM, and a shell that waits.
STUBBORN_JOB = (
    f"{sys.executable} -c \"import os, signal, time; signal.signal(signal.SIGTERM, "
    "signal.SIG_IGN); print(os.getpid(), flush=True); time.sleep(300)\" & sleep 300")


def _group(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _launch(entrypoint: str, grace_s: float = 1.0, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-S", job_supervisor._LAUNCHER, str(grace_s),
                             entrypoint], start_new_session=True, **kwargs)


def test_exit_status_is_the_entrypoints():
    assert _launch("exit 7").wait(10) == 7
    assert _launch("kill -KILL $$").wait(10) == 128 + signal.SIGKILL
    assert _launch("true").wait(10) == 0


def test_the_job_dies_with_its_supervisor(tmp_path):
    """SIGKILL the supervisor: the launcher takes the group down, the stubborn one too."""
    supervisor = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-S", {job_supervisor._LAUNCHER!r}, "1",
                              {STUBBORN_JOB!r}], start_new_session=True)
        print(p.pid, flush=True)
        time.sleep(300)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        launcher = int(supervisor.stdout.readline())
        _wait(lambda: len(_group(launcher)) >= 4)  # launcher, sh, python, sleep
        supervisor.kill()
        supervisor.wait(10)
        _wait(lambda: not _group(launcher))
    finally:
        supervisor.kill()
        for proc in _group(launcher):
            proc.kill()


def test_sigterm_stops_the_group_and_sigkills_after_the_grace(tmp_path):
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        launcher = _launch(STUBBORN_JOB, grace_s=5.0, stdout=out)
    try:
        _wait(lambda: len(_group(launcher.pid)) >= 4 and out_path.read_text().strip())
        stubborn = int(out_path.read_text())
        os.killpg(launcher.pid, signal.SIGTERM)
        # The shell and sleep go at SIGTERM; the process that ignores it is still there...
        _wait(lambda: {p.pid for p in _group(launcher.pid)} == {launcher.pid, stubborn})
        # ...until the grace period ends and SIGKILL takes the whole group.
        assert launcher.wait(15) == -signal.SIGKILL  # the launcher went with its group
        _wait(lambda: not _group(launcher.pid))
    finally:
        for proc in _group(launcher.pid):
            proc.kill()
