"""What every ember daemon does first: logging, parent-death signal, the event loop.

``die_with_parent`` asks Linux to send SIGTERM when the parent exits
(``prctl(PR_SET_PDEATHSIG)``). A local cluster started by ``ember.init()`` uses
it so that a driver killed with SIGKILL never leaves a GCS or raylet behind;
clusters started by ``ember start`` run detached and do not.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent already died before prctl took effect
        os.kill(os.getpid(), sig)


def setup(component: str, log_file: str | None, die_with_parent: bool) -> None:
    if die_with_parent:
        set_parent_death_signal()
    level = os.environ.get("EMBER_LOG_LEVEL", "INFO").upper()
    handler = (logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def run_loop(coro) -> None:
    """Run ``coro`` on uvloop; exit quietly on Ctrl-C."""
    import uvloop
    try:
        uvloop.run(coro)
    except KeyboardInterrupt:
        pass
