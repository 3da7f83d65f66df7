"""The first process of a job: it runs the entrypoint and takes its process group down with it.

Run as ``python -S job_launcher.py GRACE_S ENTRYPOINT`` (by path, not ``-m``:
it needs nothing but the standard library, so it starts in milliseconds
instead of importing ember) by the job's supervisor actor, which starts it
as the leader of a new session, so that the job's processes form one
process group that nothing else shares.

Why it exists: a supervisor is an ember worker, and workers are ended with
SIGKILL (the raylet, their parent-death signal, the OOM killer), so the
supervisor cannot be trusted to clean up after its job. This process asks
the kernel for SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), and
on SIGTERM, from there or from ``stop_job``, does what stopping a job means:
SIGTERM to the whole group, then SIGKILL after ``GRACE_S`` seconds. So a job
never outlives its supervisor, and a stopped job leaves no process behind.

Its exit status is the entrypoint's, or 128 + N if a signal N ended it (the
shell's convention).
"""
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


_stopping_since: list[float] = []


def _take_group_down(grace_s: float) -> None:
    """SIGTERM the group now; SIGKILL it after ``grace_s`` (see :func:`_finish`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM also reaches us
    _stopping_since.append(time.monotonic())
    timer = threading.Timer(grace_s, os.killpg, (0, signal.SIGKILL))
    timer.daemon = True
    timer.start()
    try:
        os.killpg(0, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _others_in_group() -> bool:
    """Whether a process other than this one is in this process group (Linux /proc)."""
    group, me = os.getpgrp(), os.getpid()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True  # cannot tell: assume so, and let the grace period run out
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == group:
            return True
    return False


def _finish(grace_s: float) -> None:
    """When stopping, outlast the entrypoint until the group is empty or the grace ends,
    then SIGKILL what is left (a process that ignores SIGTERM)."""
    if not _stopping_since:
        return
    deadline = _stopping_since[0] + grace_s
    while time.monotonic() < deadline and _others_in_group():
        time.sleep(0.05)
    if _others_in_group():
        os.killpg(0, signal.SIGKILL)


def main() -> int:
    grace_s, entrypoint = float(sys.argv[1]), sys.argv[2]
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: stop_job still reaches the group
        pass
    signal.signal(signal.SIGTERM, lambda *_: _take_group_down(grace_s))
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        _take_group_down(grace_s)
    child = subprocess.Popen(entrypoint, shell=True)
    code = child.wait()
    _finish(grace_s)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
