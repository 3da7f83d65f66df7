"""Entry point: ``python -m ember.gcs --port P``."""
import argparse

from .. import process_setup


def main() -> None:
    parser = argparse.ArgumentParser(prog="ember.gcs")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", default=None,
                        help="write the bound port here once listening")
    parser.add_argument("--storage", default=None,
                        help="'memory' or 'redis://host:port' (default: config gcs_storage)")
    parser.add_argument("--log-file", default=None)
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args()
    process_setup.setup("gcs", args.log_file, args.die_with_parent)
    from .server import run
    process_setup.run_loop(run(args.host, args.port, args.port_file, args.storage))


if __name__ == "__main__":
    main()
