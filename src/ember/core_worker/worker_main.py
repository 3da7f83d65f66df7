"""Entry point of a worker process, started by the raylet's worker pool.

Everything the worker needs arrives in ``EMBER_*`` environment variables set by
the raylet. The worker connects to its raylet, registers, and then runs tasks
on its main thread until the raylet goes away or tells it to exit.

stdout and stderr are files (see the log monitor). They are wrapped so that the
first output of each task is preceded by a ``:task_name:`` marker line, which
lets the driver label lines ``(f pid=...)``; tasks that print nothing pay
nothing.
"""
from __future__ import annotations

import os
import signal
import sys


class TaskMarkedStream:
    """A text stream that writes a task marker before a task's first output."""

    def __init__(self, raw):
        self._raw = raw
        self.task_name = ""
        self._marked = None
        self._at_line_start = True

    def write(self, text: str) -> int:
        if not text:
            return 0
        if self._marked != self.task_name:
            self._marked = self.task_name
            self._raw.write(("" if self._at_line_start else "\n")
                            + ":task_name:" + self.task_name + "\n")
        self._at_line_start = text.endswith("\n")
        return self._raw.write(text)

    def __getattr__(self, name):
        return getattr(self._raw, name)


def main() -> None:
    from .. import process_setup
    process_setup.set_parent_death_signal(signal.SIGKILL)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    out, err = TaskMarkedStream(sys.stdout), TaskMarkedStream(sys.stderr)
    sys.stdout, sys.stderr = out, err
    process_setup.setup("worker", None, False)
    env = os.environ
    from ..object_ref import ObjectRef  # the process's composition root injects it
    from ..ports import WorkerPorts
    from .core_worker import CoreWorker
    from .executor import Operations, TaskExecutor
    core = CoreWorker(is_driver=False, make_ref=ObjectRef, node_id=bytes.fromhex(env["EMBER_NODE_ID"]),
                      node_ip=env["EMBER_NODE_IP"], raylet_socket=env["EMBER_RAYLET_SOCKET"],
                      gcs_address=env["EMBER_GCS_ADDRESS"],
                      session_dir=env["EMBER_SESSION_DIR"],
                      worker_id=bytes.fromhex(env["EMBER_WORKER_ID"]),
                      ports=WorkerPorts.from_spec(env.get("EMBER_WORKER_PORTS", "")),
                      port=int(env.get("EMBER_WORKER_PORT", "0")))
    executor = core.executor = TaskExecutor(
        core.io, core.info, core.ids, core.node, core.gcs, core.functions, core.references,
        core.ownership, core.task_context, core.handlers,
        Operations(core.get, core.serialize_object, core.make_ref, core.cancel_children),
        core.task_events, streams=(out, err))
    # If the raylet goes away, this worker has no purpose left.
    core.on_raylet_lost = lambda: os._exit(1)
    signal.signal(signal.SIGTERM, lambda signum, frame: _die_of_sigterm(core, out, err))
    core.connect()
    process_setup.tune_gc(freeze=True)  # after startup: what it made is kept from scans
    executor.run_forever()
    out.flush()
    err.flush()
    os._exit(0)


def _die_of_sigterm(core, out, err) -> None:
    """SIGTERM (the raylet stops the workers of a finished job, or idle ones): send the
    task events not flushed yet, then die of the signal as before.

    Without this the executor's record of the job's last tasks (where and when
    they ran) would be lost: the driver flushes its side as it exits, and the
    job's workers are stopped right after.
    """
    # A second SIGTERM (the job ended and the lease's owner left: two reasons, two
    # signals) must not cut the flush short; the raylet's SIGKILL ends a hang.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        core.io.run(_flush(core.task_events), timeout=1.0)
    except Exception:  # noqa: BLE001 - dying anyway; the events are only lost
        pass
    out.flush()
    err.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


async def _flush(task_events) -> None:
    task_events.flush()


if __name__ == "__main__":
    main()
