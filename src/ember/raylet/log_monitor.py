"""Reads worker log files and sends new lines to the drivers, through the GCS.

Workers write their stdout and stderr to files (never to a pipe the raylet must
drain, so a chatty task can never block on a full pipe). This monitor polls
those files, splits new bytes into lines, and publishes them per job. A worker
announces what it is running with a marker line, ``:task_name:<name>``, written
just before the first output of each task; the monitor strips markers and uses
them to label lines, as in ``(f pid=123) hello``.

Polling costs one ``fstat`` per file per period, which is nothing next to the
latency a driver tolerates for prints (0.1 s).
"""
from __future__ import annotations

import asyncio
import logging

from ..config import config
from ..protocol import gcs as msg

logger = logging.getLogger(__name__)

TASK_MARKER = ":task_name:"


class _TailedFile:
    __slots__ = ("path", "is_err", "file", "partial", "task_name", "worker")

    def __init__(self, worker, path: str, is_err: bool):
        self.worker = worker
        self.path = path
        self.is_err = is_err
        self.file = None
        self.partial = b""
        self.task_name = ""


class LogMonitor:
    def __init__(self, node_ip: str, publish):
        self.node_ip = node_ip
        self._publish = publish
        self._files: list[_TailedFile] = []
        self._task: asyncio.Task | None = None

    def add_worker(self, worker) -> None:
        out, err = worker.log_paths
        self._files.append(_TailedFile(worker, out, False))
        self._files.append(_TailedFile(worker, err, True))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.poll()
        for f in self._files:
            if f.file is not None:
                f.file.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(config.log_poll_period_s)
            try:
                self.poll()
            except Exception:
                logger.exception("log monitor failed")

    def poll(self) -> None:
        batches = []
        keep = []
        for tailed in self._files:
            data = self._read(tailed)
            if data:
                batches.extend(self._split(tailed, data))
            dead = tailed.worker.state.value == "dead"
            if dead and not data:
                if tailed.file is not None:
                    tailed.file.close()
                continue
            keep.append(tailed)
        self._files = keep
        if batches:
            self._publish(msg.PublishLogs(batches))

    @staticmethod
    def _read(tailed: _TailedFile) -> bytes:
        if tailed.file is None:
            try:
                tailed.file = open(tailed.path, "rb")
            except FileNotFoundError:
                return b""
        return tailed.file.read()

    def _split(self, tailed: _TailedFile, data: bytes) -> list[msg.LogBatch]:
        data = tailed.partial + data
        lines = data.split(b"\n")
        tailed.partial = lines.pop()
        batches: list[msg.LogBatch] = []
        current: list[str] = []
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line.startswith(TASK_MARKER):
                if current:
                    batches.append(self._batch(tailed, current))
                    current = []
                tailed.task_name = line[len(TASK_MARKER):]
                continue
            current.append(line)
        if current:
            batches.append(self._batch(tailed, current))
        return batches

    def _batch(self, tailed: _TailedFile, lines: list[str]) -> msg.LogBatch:
        worker = tailed.worker
        return msg.LogBatch(job_id=worker.job_id, pid=worker.pid, ip=self.node_ip,
                            task_name=tailed.task_name, is_err=tailed.is_err, lines=lines)
