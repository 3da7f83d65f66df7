"""Start the dashboard at the first connection to its port (socket activation).

Why: a dashboard costs a process that imports ember and aiohttp, about half a
CPU second, and most local clusters (``ember.init()`` in a script, in a
test) never open it. On a small machine that half second competes with the
cluster's own start-up. So a head started by ``ember.init()`` binds the
dashboard's port at once (the URL is good from the start, and reported) but
starts the process only when something connects; that first connection waits
in the socket's backlog and is served as soon as the process runs, as with
systemd's socket activation. ``ember start --head`` starts it at once
instead (its command exits; nothing would be left to watch the socket).

One thread per head watches the socket and starts the process. It then stays
until :meth:`DashboardOnDemand.stop`: Linux sends a child its parent-death
signal when the *thread* that started it ends, and the dashboard must live
as long as its head, not as long as that thread's first task.
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import typing


class DashboardOnDemand:
    """The head's dashboard: ``spawn(sock)`` runs at the first connection to ``sock``."""

    def __init__(self, sock: socket.socket,
                 spawn: typing.Callable[[socket.socket], subprocess.Popen]):
        self._sock = sock
        self._spawn = spawn
        self._lock = threading.Lock()
        self._stopping = False  # under _lock
        #: The dashboard process, once started (under _lock).
        self.process: subprocess.Popen | None = None
        self._wakeup_read, self._wakeup_write = os.pipe()
        self._thread = threading.Thread(target=self._watch, name="ember-dashboard-on-demand",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        readable, _, _ = select.select([self._sock, self._wakeup_read], [], [])
        with self._lock:
            if self._sock in readable and not self._stopping:
                self.process = self._spawn(self._sock)
            self._sock.close()  # the process has its own copy
        os.read(self._wakeup_read, 1)  # until stop(): see the module docstring
        os.close(self._wakeup_read)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dashboard if it started (SIGTERM, then SIGKILL), and the watching."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        os.write(self._wakeup_write, b"x")
        os.close(self._wakeup_write)
        self._thread.join(timeout)
