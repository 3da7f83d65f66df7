"""Printing what workers printed, at the driver, the way Ray does.

Lines arrive from the GCS in batches and are written with a prefix naming the
task (or actor) and the worker's pid, plus its IP when it ran on another node:
``(f pid=1234) hello``. stderr lines go to the driver's stderr.
"""
from __future__ import annotations

import logging
import sys

from ..experimental import tqdm_ray
from ..protocol import gcs as gcs_msg

logger = logging.getLogger("ember")


def log_printer(node_ip: str):
    """The handler of LogBatch messages at a driver on the node at ``node_ip``."""
    return lambda conn, batch: print_logs(batch, node_ip)


def print_logs(batch: gcs_msg.LogBatch, node_ip: str) -> None:
    lines = batch.lines
    if not batch.is_err and any(tqdm_ray.RAY_TQDM_MAGIC in line for line in lines):
        # Progress bars' states (ember.experimental.tqdm_ray): drawn, not printed.
        lines = [line for line in lines if not tqdm_ray.handle_line(line)]
        if not lines:
            return
    where = f"pid={batch.pid}"
    if batch.ip != node_ip:
        where += f", ip={batch.ip}"
    prefix = f"({batch.task_name} {where}) " if batch.task_name else f"({where}) "
    stream = sys.stderr if batch.is_err else sys.stdout
    try:
        stream.write("".join(prefix + line + "\n" for line in lines))
        stream.flush()
    except (ValueError, OSError):  # the stream was closed at interpreter exit
        pass


def print_error(conn, info: gcs_msg.ErrorInfo) -> None:
    logger.warning("%s", info.message)
