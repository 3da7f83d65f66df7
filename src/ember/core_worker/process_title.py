"""What a worker process shows of the task it runs: its name, and its thread count.

- The process name becomes ``ember::<task>`` (Ray shows ``ray::<task>``), so that
  ``ps``, ``top`` and ``psutil.Process().name()`` tell which task a worker runs.
  Linux keeps 15 bytes of it (``prctl(PR_SET_NAME)``; no compiled dependency).
- ``OMP_NUM_THREADS`` is the task's CPU count (at least 1), as Ray sets it, so
  that a library that reads it (OpenMP, numexpr, ...) does not start a thread
  per core of the machine in every worker. A value the user set (in the
  environment the worker started with, or in the task's runtime env) is kept.

Both change only when the task's name or CPU count differs from the last
one's: a row of tasks of one function costs one comparison each.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_PR_SET_NAME = 15


def _load_prctl():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):  # not Linux, or no libc to load: names stay
        return None


class ProcessTitle:
    def __init__(self):
        self._prctl = _load_prctl()
        self._name = ""
        #: Whether ember sets OMP_NUM_THREADS (the user did not).
        self._threads_managed = "OMP_NUM_THREADS" not in os.environ
        self._threads = ""

    def task_started(self, name: str, cpus: float, runtime_env: str) -> None:
        """``name``: the task's ``name`` option, else its function's qualified name."""
        if name != self._name:
            self._name = name
            if self._prctl is not None:
                short = name.rsplit(".", 1)[-1]
                self._prctl(_PR_SET_NAME, ("ember::" + short).encode()[:15], 0, 0, 0)
        if self._threads_managed:
            threads = str(max(1, int(cpus)))
            if threads != self._threads and "OMP_NUM_THREADS" not in runtime_env:
                self._threads = os.environ["OMP_NUM_THREADS"] = threads
