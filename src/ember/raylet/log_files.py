"""The node's log files, served to whoever asks (``ember logs``, ``get_log``, the dashboard).

Every process of a node writes into ``<session dir>/logs/``. A node on
another machine keeps its files there, so the state API reads them through
that node's raylet, never from its own disk: one path that works for every
node. Only plain names inside the logs directory are served; a name with a
path in it is refused, so the service cannot read anything else.
"""
from __future__ import annotations

import fnmatch
import os

from ..protocol import raylet as msg

#: Read at most this much from the end of a file to find its last lines.
_TAIL_CHUNK = 64 * 1024
#: The most a single reply carries, whatever is asked.
MAX_READ = 4 << 20


class LogFiles:
    def __init__(self, session_dir: str):
        self.dir = os.path.join(session_dir, "logs")

    def handlers(self):
        return {msg.ListLogFiles: self.list_files, msg.ReadLogFile: self.read}

    def list_files(self, conn, req: msg.ListLogFiles) -> msg.ListLogFilesReply:
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            names = []
        return msg.ListLogFilesReply([n for n in names if fnmatch.fnmatch(n, req.glob_filter)])

    def read(self, conn, req: msg.ReadLogFile) -> msg.ReadLogFileReply:
        name = req.name
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            return msg.ReadLogFileReply(error=f"{name!r} is not the name of a log file")
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                if req.offset < 0:
                    return _tail(f, req.tail)
                f.seek(req.offset)
                data = f.read(max(0, min(req.max_bytes, MAX_READ)))
                return msg.ReadLogFileReply(data, req.offset + len(data))
        except (FileNotFoundError, IsADirectoryError):
            return msg.ReadLogFileReply(error=f"no log file {name!r} on this node")
        except OSError as exc:
            return msg.ReadLogFileReply(error=f"cannot read log file {name!r}: {exc}")


def _tail(f, lines: int) -> msg.ReadLogFileReply:
    """The last ``lines`` lines of ``f`` (all if < 0), and the file's end."""
    end = f.seek(0, os.SEEK_END)
    if lines < 0:
        start = max(0, end - MAX_READ)
    else:
        start = end
        # Step back until the chunk holds more than ``lines`` line ends, or the start.
        while start > 0:
            start = max(0, start - _TAIL_CHUNK)
            f.seek(start)
            if f.read(end - start).count(b"\n") > lines or end - start >= MAX_READ:
                break
    f.seek(start)
    data = f.read(end - start)
    if lines >= 0:
        kept = data.splitlines(keepends=True)[-lines:] if lines else []
        data = b"".join(kept)
    return msg.ReadLogFileReply(data, end)
