"""Checking ports on this machine: is a port free, and who holds it (the I/O beside
the pure policy of :mod:`ember.ports`).

Why check before starting: a daemon that cannot bind its port fails in its
own log, after the processes started before it are up; checked first, the
user gets one line naming the port, the option and the process that holds
it, and nothing is left half-started. A port taken between the check and
the bind (a race with another program) still fails the start, with the
daemon's log to say so.

The test binds with SO_REUSEADDR, as asyncio's servers and aiohttp do: a
port whose last connections linger in TIME_WAIT is free for them, so it is
free here too.
"""
from __future__ import annotations

import socket


def is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (0.0.0.0: every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("" if host in ("0.0.0.0", "::") else host, port))
        except OSError:
            return False
    return True


def holder(port: int) -> str:
    """The process listening on TCP ``port`` here, as "pid 123 (redis-server)"; "" if
    unknown (another user's process, or no permission to see it)."""
    import psutil  # 22 ms: imported when used, not by `import ember`
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return ""
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if not conn.pid:
                return ""
            try:
                return f"pid {conn.pid} ({_describe(psutil.Process(conn.pid))})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return ""


def _describe(proc) -> str:
    """"redis-server", or "python -m ember.raylet" for a Python module's process."""
    name, cmdline = proc.name(), proc.cmdline()
    if "-m" in cmdline[:-1]:
        return f"{name} -m {cmdline[cmdline.index('-m') + 1]}"
    return name


def ensure_free(host: str, port: int, option: str) -> None:
    """A ValueError in one line if ``port`` (given by ``option``) is taken on ``host``."""
    if not port or is_free(host, port):
        return
    who = holder(port)
    raise PortInUseError(f"Port {port} ({option}) is already in use on {host}"
                         + (f" by {who}" if who else "")
                         + f": stop that process or choose another {option}.")


class PortInUseError(ValueError):
    """A port an option asked for is taken."""
