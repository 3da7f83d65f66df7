"""The raylet's side of the zygote (see ember/core_worker/zygote.py).

:class:`Zygote` starts the zygote process and asks it for workers;
:class:`ForkedProcess` stands for one forked worker with the part of
``subprocess.Popen``'s interface the worker pool uses (``pid``, ``poll``,
``send_signal``, ``kill``, ``wait``), so the pool treats forked and spawned
workers alike. Exit statuses arrive from the zygote, which alone can reap its
children; they are read on the raylet's event loop.

If the zygote is not running (it failed to start, or died), the pool falls
back to spawning workers with ``subprocess``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

logger = logging.getLogger(__name__)


class ForkedProcess:
    def __init__(self, zygote: "Zygote"):
        self._zygote = zygote
        #: 0 until the zygote reports the fork.
        self.pid = 0
        self.returncode: int | None = None
        self._pending_signal: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._zygote.alive():
            self.returncode = -signal.SIGKILL  # died with the zygote
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        if not self.pid:
            self._pending_signal = sig
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block (reading the zygote's reports) until the worker exits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("forked worker", timeout)
            self._zygote.read_reports(blocking=0.01)
        return self.returncode

    def forked(self, pid: int) -> None:
        self.pid = pid
        if self._pending_signal is not None:
            self.send_signal(self._pending_signal)


class Zygote:
    def __init__(self, env: dict[str, str], log_path: str):
        ours, theirs = socket.socketpair()
        self._sock = ours
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ember.core_worker.zygote", "--fd", str(theirs.fileno()),
                 "--session-dir", env.get("EMBER_SESSION_DIR", "")],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, env=env, close_fds=True)
        theirs.close()
        self._buffer = b""
        self._by_worker: dict[str, ForkedProcess] = {}
        self._by_pid: dict[int, ForkedProcess] = {}
        self._exited_early: dict[int, int] = {}

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def start_reading(self) -> None:
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self.read_reports)

    def fork(self, worker_id: str, env: dict[str, str], out: str, err: str) -> ForkedProcess:
        proc = ForkedProcess(self)
        self._by_worker[worker_id] = proc
        self._sock.sendall(json.dumps({"op": "fork", "worker_id": worker_id, "env": env,
                                       "out": out, "err": err}).encode() + b"\n")
        return proc

    def read_reports(self, blocking: float = 0.0) -> None:
        if blocking > 0:
            self._sock.settimeout(blocking)
        else:
            self._sock.setblocking(False)
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, socket.timeout, InterruptedError):
            return
        except OSError:
            data = b""
        finally:
            self._sock.setblocking(False)
        if not data:
            self._zygote_gone()
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            report = json.loads(line)
            if report["op"] == "forked":
                proc = self._by_worker.pop(report["worker_id"], None)
                if proc is not None:
                    proc.forked(report["pid"])
                    self._by_pid[report["pid"]] = proc
                    early = self._exited_early.pop(report["pid"], None)
                    if early is not None:
                        proc.returncode = early
            elif report["op"] == "exited":
                proc = self._by_pid.pop(report["pid"], None)
                if proc is None:
                    self._exited_early[report["pid"]] = report["status"]
                else:
                    proc.returncode = report["status"]

    def _zygote_gone(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        except (RuntimeError, ValueError):
            pass
        if self.alive():
            self._process.kill()
        self._process.wait()
        logger.warning("the worker zygote exited; new workers will be spawned instead")

    def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        except (RuntimeError, ValueError):
            pass
        if self.alive():
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._sock.close()
