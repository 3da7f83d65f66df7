"""The zygote: a process that has imported the worker's code and forks workers.

Starting a Python worker from scratch costs an interpreter start and the
imports of msgspec, uvloop, cloudpickle and ember: a few hundred milliseconds
of CPU per worker, which every actor pays. The zygote pays it once; each
worker is then an ``os.fork()`` of it, ready in milliseconds, and shares the
imported modules' pages with its siblings (copy-on-write), which lowers the
node's memory footprint.

Forking is safe here because the zygote never starts a thread or an event
loop: the child starts its own, exactly as a freshly spawned worker would.

Protocol with the raylet, over a socket pair, one JSON object per line:

- raylet -> zygote: ``{"op": "fork", "worker_id", "env", "out", "err"}``
- zygote -> raylet: ``{"op": "forked", "worker_id", "pid"}`` and, when a child
  ends, ``{"op": "exited", "pid", "status"}`` (status as in ``Popen.returncode``:
  negative for a signal), because only the zygote can reap its children.

The zygote dies with the raylet (parent-death signal), and its workers die
with it.
"""
from __future__ import annotations

import gc
import json
import os
import random
import select
import signal
import socket
import sys
import traceback


def main() -> None:
    from .. import process_setup
    process_setup.set_parent_death_signal(signal.SIGKILL)
    fd = int(sys.argv[sys.argv.index("--fd") + 1])
    ctrl = socket.socket(fileno=fd)
    # Everything a worker imports, imported once, here.
    from . import worker_main  # noqa: F401
    from .core_worker import CoreWorker  # noqa: F401
    from .executor import TaskExecutor  # noqa: F401
    import ember  # noqa: F401
    # What was imported stays shared with every worker only while nobody writes to
    # its pages; the garbage collector writes into the header of each object it
    # scans. Frozen objects are never scanned, in the zygote or in its workers.
    gc.collect()
    gc.freeze()

    buffer = b""
    while True:
        readable, _, _ = select.select([ctrl], [], [], 0.05)
        _reap(ctrl)
        if not readable:
            continue
        data = ctrl.recv(65536)
        if not data:
            os._exit(0)  # the raylet is gone
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            if request["op"] == "fork":
                pid = _fork(ctrl, request)
                _send(ctrl, {"op": "forked", "worker_id": request["worker_id"], "pid": pid})


def _fork(ctrl: socket.socket, request: dict) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    # --- the child: become a worker ------------------------------------------------
    try:
        ctrl.close()
        for target, path in ((1, request["out"]), (2, request["err"])):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, target)
            os.close(fd)
        os.environ.update(request["env"])
        random.seed()
        from . import worker_main
        worker_main.main()
    except BaseException:  # noqa: BLE001 - report, then end this child only
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _reap(ctrl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _send(ctrl, {"op": "exited", "pid": pid, "status": code})


def _send(ctrl: socket.socket, message: dict) -> None:
    try:
        ctrl.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        os._exit(0)


if __name__ == "__main__":
    main()
