"""The ``ember`` command: start, stop and inspect clusters, run benchmarks and the demo.

    ember start --head [--port 6379] [--node-ip-address IP | --bind-all] [--num-cpus N] ...
    ember start --address HEAD_IP:PORT --token TOKEN    # add this machine as a node
    ember start ... --node-manager-port P --min-worker-port A --max-worker-port B
                                             # fixed ports, for firewalls (see ember.ports)
    ember get-auth-token                     # print the local cluster's token
    ember status [--address ...]
    ember stop [--force]
    ember start --head --autoscaling-config cluster.yaml   # with the autoscaler
    ember up cluster.yaml / ember down cluster.yaml        # a whole cluster from a config
    ember microbenchmark [--filter SUBSTR] [--json]
    ember demo
    ember list|get|summary|logs|timeline ...   # see ember/observability/commands.py
    ember job submit|status|logs|stop|delete|list ...   # see ember/dashboard/job_cli.py
    ember dashboard                          # the dashboard's URL
"""
from __future__ import annotations

import os
import time

import click

from . import node as node_mod
from . import port_check
from . import ports as ports_mod
from .cli_options import parse_json_object
from .dashboard import job_cli
from .observability import commands as observability_commands
from .rpc import auth
from .autoscaler import launcher
from .autoscaler.config import AutoscalerConfig, load_config
from .autoscaler.launcher import start_monitor


@click.group()
@click.version_option(package_name="ember")
def main():
    """ember: Ray Core's API, in pure Python."""


def _join_instructions(gcs_address: str, default_ip: str, token_file: str) -> str:
    """Where the head listens, and how other machines join it or how to let them."""
    token = (f"Every connection must present the cluster token, stored in {token_file} "
             "(readable by you only); `ember get-auth-token` prints it.\n\n")
    if not gcs_address.startswith("127."):
        return (f"It listens on {gcs_address.rpartition(':')[0]}: other machines can reach it. "
                + token + "To add another machine to this cluster, run there:\n"
                f"    ember start --address {gcs_address} --token TOKEN\n"
                "Traffic between machines is not encrypted unless every node runs with "
                "EMBER_USE_TLS=1 (see the README).\n\n")
    if default_ip.startswith("127."):
        where = ("ADDRESS\nwhere ADDRESS is this machine's address on their network (no "
                 "network interface with a default route was found)")
    else:
        where = f"{default_ip}\n(this machine's address on its default route)"
    return (f"It listens on loopback ({gcs_address.rpartition(':')[0]}) only: other machines "
            "cannot reach it. To let them join, stop this node and start it again with\n"
            f"    ember start --head --node-ip-address {where}, then run "
            "`ember start --address ... --token TOKEN` on them.\n" + token)


@main.command()
@click.option("--head", is_flag=True, help="Start the head node (GCS and raylet).")
@click.option("--address", default=None, help="HEAD_IP:PORT of the cluster to join.")
@click.option("--port", type=int, default=None,
              help="For --head: the GCS port (default 6379; 0: a free port).")
@click.option("--node-manager-port", type=int, default=0, show_default=True,
              help="The raylet's port (0: a free port). It serves the object manager too.")
@click.option("--object-manager-port", type=int, default=0, show_default=True,
              help="The object manager's port: ember serves it on the node manager's port, "
                   "so this sets that port (0: as --node-manager-port).")
@click.option("--min-worker-port", type=int, default=ports_mod.DEFAULT_MIN_WORKER_PORT,
              show_default=True,
              help="The lowest port workers and drivers listen on (0 with "
                   "--max-worker-port 0: any port).")
@click.option("--max-worker-port", type=int, default=ports_mod.DEFAULT_MAX_WORKER_PORT,
              show_default=True, help="The highest port workers and drivers listen on.")
@click.option("--worker-port-list", default=None,
              help="Comma-separated ports for workers and drivers, instead of the range.")
@click.option("--num-cpus", type=float, default=None)
@click.option("--num-gpus", type=float, default=None)
@click.option("--memory", type=int, default=None, help="Bytes of memory to advertise.")
@click.option("--resources", default=None, help='Custom resources as JSON, e.g. \'{"a": 2}\'.')
@click.option("--labels", default=None, help='Node labels as JSON, e.g. \'{"zone": "a"}\'.')
@click.option("--object-store-memory", type=int, default=None)
@click.option("--node-ip-address", default=None,
              help="This node's IP: every port listens there. Default: 127.0.0.1 for "
                   "--head (this machine only); for a joining node, the default-route IP.")
@click.option("--bind-all", is_flag=True,
              help="For --head: the GCS listens on every interface (0.0.0.0), the other "
                   "ports on --node-ip-address or the default-route IP.")
@click.option("--token", default=None,
              help="The cluster token, to join with --address (default: EMBER_AUTH_TOKEN). "
                   "For --head, use this token instead of a new random one.")
@click.option("--storage", default=None,
              help="GCS storage, for --head: 'redis://host:port' for GCS fault tolerance "
                   "(default: EMBER_GCS_STORAGE, else 'memory').")
@click.option("--metrics-export-port", type=int, default=None,
              help="Serve Prometheus metrics on this port of the node's IP (0: a free "
                   "port; `ember status` shows it).")
@click.option("--include-dashboard", type=bool, default=None,
              help="For --head: start the dashboard (default: if aiohttp is installed).")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="For --head: the dashboard's address; any but loopback requires the "
                   "cluster token in every request.")
@click.option("--dashboard-port", type=int, default=None,
              help="For --head: the dashboard's port (default 8265, else the next free one).")
@click.option("--ray-client-server-port", type=int, default=10001, show_default=True,
              help="Head only: the port a driver on this machine names the cluster by in a "
                   "ray:// address (ember has no client server; such a driver connects "
                   "directly).")
@click.option("--block", is_flag=True, help="Stay in the foreground until interrupted.")
@click.option("--autoscaling-config", default=None, type=click.Path(),
              help="Cluster YAML, for --head: run the autoscaler on this head.")
def start(head, address, port, node_manager_port, object_manager_port, min_worker_port,
          max_worker_port, worker_port_list, num_cpus, num_gpus, memory, resources, labels,
          object_store_memory, node_ip_address, bind_all, token, storage, metrics_export_port,
          include_dashboard, dashboard_host, dashboard_port, ray_client_server_port, block,
          autoscaling_config):
    """Start ember's processes on this machine."""
    if head == bool(address):
        raise click.UsageError("Give exactly one of --head or --address.")
    if bind_all and not head:
        raise click.UsageError("--bind-all is for --head; a joining node listens on "
                               "--node-ip-address (default: the default-route IP).")
    for option, value in (("--port", port), ("--dashboard-port", dashboard_port)):
        if value is not None and not head:
            raise click.UsageError(f"{option} is for --head: a joining node runs no "
                                   f"{'GCS' if option == '--port' else 'dashboard'}.")
    autoscaler_config = _autoscaling_config(autoscaling_config, head)
    resources = parse_json_object(resources, "--resources")
    labels = parse_json_object(labels, "--labels")
    try:
        ports = ports_mod.node_ports(
            port=ports_mod.DEFAULT_GCS_PORT if port is None and head else port,
            node_manager_port=node_manager_port, object_manager_port=object_manager_port,
            min_worker_port=min_worker_port, max_worker_port=max_worker_port,
            worker_port_list=worker_port_list, metrics_export_port=metrics_export_port,
            dashboard_port=dashboard_port)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        if head:
            node_ip = node_ip_address or (node_mod.default_node_ip() if bind_all
                                          else "127.0.0.1")
            procs = node_mod.start_head(
                num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, memory=memory,
                object_store_memory=object_store_memory, labels=labels,
                node_ip=node_ip, detached=True, storage=storage,
                gcs_host="0.0.0.0" if bind_all else None, token=token,
                include_dashboard=include_dashboard, dashboard_host=dashboard_host,
                ports=ports)
            gcs_address = procs.gcs_address
        else:
            gcs_address = address
            # A node joining a head on loopback is on the same machine: loopback too.
            node_ip = node_ip_address or ("127.0.0.1" if address.startswith("127.")
                                          else node_mod.default_node_ip())
            procs = node_mod.start_worker_node(
                gcs_address=gcs_address, num_cpus=num_cpus, num_gpus=num_gpus,
                resources=resources, memory=memory, object_store_memory=object_store_memory,
                labels=labels, node_ip=node_ip, detached=True, token=token, ports=ports)
    except port_check.PortInUseError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        registered = node_mod.wait_for_registration(gcs_address, procs.node_id, timeout=30,
                                                    processes=procs.processes)
    except auth.AuthenticationError as exc:
        procs.stop()
        raise click.ClickException(str(exc)) from None
    if not registered:
        procs.stop()
        raise click.ClickException(
            f"The node did not come up; see the logs in {procs.session_dir}/logs."
            + node_mod.gcs_startup_error(procs.session_dir))
    if head:
        if autoscaler_config is not None:
            start_monitor(procs, autoscaler_config, detached=True)
        node_mod.write_current_cluster(gcs_address, procs.session_dir,
                                       client_port=ray_client_server_port)
        listening = ("The GCS listens on every interface (--bind-all).\n"
                     if bind_all else "")
        dashboard = (f"View the dashboard at http://{procs.dashboard_url}\n"
                     if procs.dashboard_url else "")
        click.echo(f"ember started a head node at {gcs_address}.\n" + dashboard + listening
                   + _join_instructions(gcs_address, node_mod.default_node_ip(),
                                        auth.token_path(procs.session_dir)) +
                   "To connect a driver on this machine:\n"
                   "    import ember\n    ember.init(address='auto')\n\n"
                   "To stop: ember stop")
    else:
        click.echo(f"ember started a node that joined the cluster at {gcs_address}.")
    if block:
        try:
            while all(p.poll() is None for p in procs.processes):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        procs.stop()


@main.command()
@click.option("--force", "-f", is_flag=True, help="Kill with SIGKILL at once.")
@click.option("--grace-period", type=float, default=10.0, show_default=True)
@click.option("--all", "everywhere", is_flag=True,
              help="Stop ember processes of every temp dir, not only EMBER_TEMP_DIR's.")
def stop(force, grace_period, everywhere):
    """Stop the ember processes on this machine (those under EMBER_TEMP_DIR)."""
    stopped = node_mod.stop_all_processes(force=force, grace_period=grace_period,
                                          everywhere=everywhere)
    node_mod.clear_current_cluster()
    click.echo(f"Stopped {stopped} ember process(es).")


@main.command("get-auth-token")
@click.option("--address", default=None, help="GCS address; default: the local cluster.")
def get_auth_token(address):
    """Print the cluster token of the cluster `ember start --head` started here."""
    gcs_address = _gcs_address(address)
    token = node_mod.find_token(gcs_address)
    if not token:
        raise click.ClickException(
            f"No token found for the cluster at {gcs_address}: on its head node it is in "
            f"the session directory's {auth.TOKEN_FILE} file.")
    click.echo(token)


@main.command()
@click.option("--address", default=None, help="GCS address; default: the local cluster.")
def status(address):
    """Show the cluster's nodes, resource and object store usage, and demands."""
    _show("format_status", address)


@main.command()
@click.option("--address", default=None, help="GCS address; default: the local cluster.")
def memory(address):
    """Show the objects in the cluster: who holds them, their size, where they are."""
    _show("format_memory", address)


def _show(formatter: str, address: str | None) -> None:
    from . import state
    try:
        click.echo(getattr(state, formatter)(_gcs_address(address)))
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None


def _gcs_address(address: str | None) -> str:
    gcs_address = address or os.environ.get("EMBER_ADDRESS") or node_mod.read_current_cluster()
    if not gcs_address:
        raise click.ClickException("No running cluster found; start one with "
                                   "`ember start --head` or pass --address.")
    token = node_mod.find_token(gcs_address)
    if token:
        auth.set_token(token)
    return gcs_address


@main.command()
@click.option("--filter", "filters", multiple=True, help="Run workloads whose name has this.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per workload.")
def microbenchmark(filters, as_json):
    """Run Ray's microbenchmark workloads against a fresh local cluster.

    All workloads take about four minutes on a 2-core machine; --filter runs
    fewer. Progress goes to stderr, results to stdout. session_latest keeps
    pointing at the cluster `ember start` runs.
    """
    from . import microbenchmark as mb
    mb.main(list(filters), as_json)


@main.command()
def demo():
    """Run a short tour of ember on a local cluster: tasks, objects, errors."""
    from . import demo as demo_mod
    demo_mod.main()


# --- the autoscaler: clusters from a config ---------------------------------------------

def _autoscaling_config(path: str | None, head: bool) -> AutoscalerConfig | None:
    if path is None:
        return None
    if not head:
        raise click.UsageError("--autoscaling-config goes with --head: the autoscaler runs "
                               "on the head node.")
    return _load_cluster_config(path)


def _load_cluster_config(path: str) -> AutoscalerConfig:
    try:
        return load_config(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("cluster_config", type=click.Path())
def up(cluster_config):
    """Start a cluster from a config: the head here, workers by the autoscaler."""
    config = _load_cluster_config(cluster_config)
    try:
        procs = launcher.up(config)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    workers = {name: t.min_workers for name, t in config.worker_types().items()}
    click.echo(f"Cluster {config.cluster_name!r} is up: head at {procs.gcs_address}, "
               f"provider {config.provider['type']}, min_workers {workers}.\n"
               "To connect a driver:\n    import ember\n    ember.init(address='auto')\n"
               f"To watch it: ember status\nTo stop it: ember down {cluster_config}")


@main.command()
@click.argument("cluster_config", type=click.Path())
def down(cluster_config):
    """Stop the cluster that `ember up` started from this config."""
    config = _load_cluster_config(cluster_config)
    stopped = launcher.down(config)
    if not stopped:
        click.echo(f"Cluster {config.cluster_name!r} is not up.")
    else:
        click.echo(f"Cluster {config.cluster_name!r} is down ({stopped} processes stopped).")


observability_commands.register(main)
main.add_command(job_cli.job)
main.add_command(job_cli.dashboard)

if __name__ == "__main__":
    main()
