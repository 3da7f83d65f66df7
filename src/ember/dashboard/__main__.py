"""Entry point: ``python -m ember.dashboard --gcs-address H:P --session-dir DIR ...``."""
import argparse

from .. import process_setup
from . import DEFAULT_PORT


def main() -> None:
    parser = argparse.ArgumentParser(prog="ember.dashboard")
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--node-ip", default="127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; any but loopback requires the token")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--fd", type=int, default=None,
                        help="a listening socket on --port, bound by the head, to serve on")
    parser.add_argument("--log-file", default=None)
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args()
    process_setup.setup("dashboard", args.log_file, args.die_with_parent)
    from .server import DashboardContext, serve
    process_setup.run_loop(serve(DashboardContext(
        gcs_address=args.gcs_address, session_dir=args.session_dir, node_ip=args.node_ip,
        host=args.host, port=args.port), listening_fd=args.fd))


if __name__ == "__main__":
    main()
