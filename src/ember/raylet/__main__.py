"""Entry point: ``python -m ember.raylet --gcs-address HOST:PORT ...``."""
import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import sys

from .. import process_setup


def main() -> None:
    p = argparse.ArgumentParser(prog="ember.raylet")
    p.add_argument("--node-id", required=True, help="hex node id")
    p.add_argument("--gcs-address", required=True)
    p.add_argument("--session-dir", required=True)
    p.add_argument("--node-ip", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="node (and object) manager port")
    p.add_argument("--worker-ports", default="",
                   help="the ports workers listen on: '' any, 'LOW-HIGH' or 'P1,P2,...'")
    p.add_argument("--worker-ports-source", default="",
                   help="how the user gave them, for errors")
    p.add_argument("--metrics-export-port", type=int, default=None)
    p.add_argument("--dashboard-port", type=int, default=0, help="the head's, to report")
    p.add_argument("--resources", default="{}", help="JSON dict of total resources")
    p.add_argument("--labels", default="{}", help="JSON dict of node labels")
    p.add_argument("--object-store-memory", type=int, default=0)
    p.add_argument("--head", action="store_true")
    p.add_argument("--log-file", default=None)
    p.add_argument("--die-with-parent", action="store_true")
    args = p.parse_args()
    process_setup.setup("raylet", args.log_file, args.die_with_parent)
    process_setup.run_loop(_run(args))


async def _run(args) -> None:
    from ..ports import WorkerPorts
    from .node_manager import Raylet
    os.makedirs(os.path.join(args.session_dir, "sockets"), exist_ok=True)
    os.makedirs(os.path.join(args.session_dir, "logs"), exist_ok=True)
    raylet = Raylet(node_id=bytes.fromhex(args.node_id), gcs_address=args.gcs_address,
                    session_dir=args.session_dir, node_ip=args.node_ip, port=args.port,
                    worker_ports=WorkerPorts.from_spec(args.worker_ports,
                                                      args.worker_ports_source),
                    metrics_export_port=args.metrics_export_port,
                    dashboard_port=args.dashboard_port,
                    resources=json.loads(args.resources), labels=json.loads(args.labels),
                    object_store_memory=args.object_store_memory, is_head=args.head)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(raylet.stop("signal")))
    try:
        await raylet.start()
    except (ConnectionError, OSError) as exc:  # e.g. its port taken after the starter checked
        logging.getLogger(__name__).error("raylet could not start: %s", exc)
        why = (f"port {args.port} (--node-manager-port) is already in use on {args.node_ip}"
               if exc.errno == errno.EADDRINUSE else f"{exc}")
        print(f"ember raylet: could not start: {why}", file=sys.stderr, flush=True)
        await raylet.stop("start failed")
        raise SystemExit(1)
    await raylet.stopped.wait()


if __name__ == "__main__":
    main()
