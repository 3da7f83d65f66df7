"""Printing what workers printed, at the driver, the way Ray does.

Lines arrive from the GCS in batches and are written with a prefix naming the
task (or actor) and the worker's pid, plus its IP when it ran on another node:
``(f pid=1234) hello``. stderr lines go to the driver's stderr.
"""
from __future__ import annotations

import logging
import sys

from ..protocol import gcs as gcs_msg
from . import context

logger = logging.getLogger("ember")


def print_logs(conn, batch: gcs_msg.LogBatch) -> None:
    core = context.core
    where = f"pid={batch.pid}"
    if core is not None and batch.ip != core.node_ip:
        where += f", ip={batch.ip}"
    prefix = f"({batch.task_name} {where}) " if batch.task_name else f"({where}) "
    stream = sys.stderr if batch.is_err else sys.stdout
    try:
        stream.write("".join(prefix + line + "\n" for line in batch.lines))
        stream.flush()
    except (ValueError, OSError):  # the stream was closed at interpreter exit
        pass


def print_error(conn, info: gcs_msg.ErrorInfo) -> None:
    logger.warning("%s", info.message)
