"""What every ember daemon does first: logging, parent-death signal, the event loop.

``die_with_parent`` asks Linux to send SIGTERM when the parent exits
(``prctl(PR_SET_PDEATHSIG)``). A local cluster started by ``ember.init()`` uses
it so that a driver killed with SIGKILL never leaves a GCS or raylet behind;
clusters started by ``ember start`` run detached and do not.

``oom_score_adj``: when the machine runs out of memory, the kernel kills the
process with the highest score. Workers raise theirs to the top (1000), so
the kernel takes a worker, whose task can be retried, before the GCS or a
raylet, whose loss ends the cluster or the node; those two lower theirs. A
process may always raise its own score, but lowering it needs
CAP_SYS_RESOURCE: without it they keep the score they inherited.

``raise_open_file_limit``: a GCS holds a connection per node and driver, a
raylet one per worker, a driver one per actor it calls; a soft limit of 1024
open files (common) would end a cluster at about a thousand actors with
"Too many open files". Every process raises its soft limit to the hard one.

``tune_gc``: a call allocates a dozen objects the cyclic garbage collector
tracks (refs, specs, futures), so with CPython's default threshold of 700 the
collector ran every sixty calls or so, and most of what it scanned was still
alive (calls in flight) or was made at startup (modules, classes): 6-7 us of
a driver's 35-40 us of CPU per actor call. Reference counting frees nearly
everything; the collector only finds cycles, and finding them ten times less
often (``gc_gen0_threshold``, 7,000) cut a driver's CPU per call by 10-15%.
Workers also ``gc.freeze`` what their startup made, so that full collections
stop scanning it; a driver does not, as objects the user made before ``init``
could then never be collected.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import resource
import signal
import sys
import uvloop

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


def set_oom_score_adj(value: int, path: str = "/proc/self/oom_score_adj") -> bool:
    """Set this process's OOM-killer score adjustment; False if not allowed or not Linux."""
    try:
        with open(path, "w") as f:
            f.write(str(value))
        return True
    except OSError as exc:
        logging.getLogger(__name__).debug("could not set oom_score_adj to %d: %s", value, exc)
        return False


def raise_open_file_limit(ceiling: int = 1 << 20) -> int:
    """Raise this process's soft limit of open files to its hard limit (at most
    ``ceiling``); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
        except (ValueError, OSError):
            pass
    return soft


def tune_gc(freeze: bool = False) -> None:
    """Collect cyclic garbage less often (see the module doc); with ``freeze``, also
    keep what exists now out of the collector's scans. A threshold set higher than
    ours, or collection turned off, is kept; ``gc_gen0_threshold`` 0 leaves the
    collector as Python sets it."""
    from .config import config
    if config.gc_gen0_threshold <= 0:
        return
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < config.gc_gen0_threshold:
        gc.set_threshold(config.gc_gen0_threshold, gen1, gen2)
    if freeze:
        gc.freeze()


def setup(component: str, log_file: str | None, die_with_parent: bool) -> None:
    from .config import config
    raise_open_file_limit()
    tune_gc()
    if die_with_parent:
        set_parent_death_signal()
    set_oom_score_adj(config.worker_oom_score_adj if component == "worker"
                      else config.system_oom_score_adj)
    level = os.environ.get("EMBER_LOG_LEVEL", "INFO").upper()
    handler = (logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def run_loop(coro) -> None:
    """Run ``coro`` on uvloop; exit quietly on Ctrl-C."""
    try:
        uvloop.run(coro)
    except KeyboardInterrupt:
        pass
