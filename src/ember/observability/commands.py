"""The observability commands of the ``ember`` CLI, shaped like Ray's.

    ember list tasks|actors|objects|nodes|workers|jobs|placement-groups
               [--filter "state=ALIVE"] [--limit N] [--detail] [--format table|json|yaml]
    ember get actors|tasks|nodes|workers|placement-groups|objects ID
    ember summary tasks|actors|objects
    ember logs cluster [GLOB] | actor --id ID | task --id ID | worker --pid PID
               [--follow] [--tail N]
    ember timeline [--output FILE]

They are thin: every answer comes from ``ember.util.state`` (so the CLI and
the Python API cannot disagree). Bad input ends in one line that names what
was wrong and what is valid; nothing here changes the cluster.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile

import click

from ..util.state import api
from .schemas import PREDICATES
from .errors import RayStateApiException

#: Columns of each resource's table: what fits an 80-column terminal. The
#: json and yaml formats, and --detail, show every field.
TABLE_COLUMNS = {
    "tasks": ("task_id", "name", "state", "worker_pid"),
    "actors": ("actor_id", "class_name", "state", "name", "pid"),
    "objects": ("object_id", "object_size", "reference_type"),
    "nodes": ("node_id", "node_ip", "is_head_node", "state", "node_name"),
    "workers": ("worker_id", "worker_type", "is_alive", "ip", "pid"),
    "jobs": ("job_id", "type", "status", "entrypoint"),
    "placement-groups": ("placement_group_id", "name", "state", "creator_job_id"),
    "runtime-envs": ("runtime_env", "success", "node_id"),
}
#: Shorter headers, so that rows fit 80 columns.
_HEADERS = {"worker_pid": "PID", "object_size": "SIZE", "is_head_node": "HEAD",
            "placement_group_id": "PLACEMENT_GROUP_ID", "creator_job_id": "JOB_ID",
            "attempt_number": "ATTEMPT"}
#: Random ids (nodes, workers, actors, groups) are cut to this many characters in
#: tables; ``ember get`` accepts such a prefix. Task and object ids share their
#: first characters within a process, so they are shown whole.
_ID_WIDTH = 16
_WHOLE_IDS = ("task_id", "object_id", "job_id")

_LISTERS = {
    "tasks": api.list_tasks, "actors": api.list_actors, "objects": api.list_objects,
    "nodes": api.list_nodes, "workers": api.list_workers, "jobs": api.list_jobs,
    "placement-groups": api.list_placement_groups, "runtime-envs": api.list_runtime_envs,
}
_ID_FIELD = {"tasks": "task_id", "actors": "actor_id", "objects": "object_id",
             "nodes": "node_id", "workers": "worker_id", "jobs": "job_id",
             "placement-groups": "placement_group_id"}


class _StateErrors(click.Group):
    """Turn the state API's errors into one ``Error: ...`` line and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ValueError, ConnectionError, RayStateApiException) as exc:
            raise click.ClickException(str(exc)) from None


def parse_filter(text: str) -> tuple[str, str, str]:
    """``"key=value"`` or ``"key!=value"`` -> ``(key, predicate, value)``."""
    for predicate in ("!=", "="):
        key, sep, value = text.partition(predicate)
        if sep and key.strip():
            return key.strip(), predicate, value.strip()
    raise click.BadParameter(
        f"malformed filter {text!r}: expected KEY{'VALUE or KEY'.join(PREDICATES)}VALUE, e.g. "
        "--filter 'state=ALIVE'", param_hint="--filter")


def _short(value, key: str):
    if (isinstance(value, str) and key.endswith("_id") and key not in _WHOLE_IDS
            and len(value) > _ID_WIDTH):
        return value[:_ID_WIDTH]
    return value


def render(rows: list[dict], fmt: str, columns=None) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    if fmt == "yaml":
        import yaml  # 25 ms: imported when used, not by `import ember`
        return yaml.safe_dump(rows, sort_keys=False, default_flow_style=False).rstrip()
    from tabulate import tabulate
    columns = columns or (list(rows[0]) if rows else [])
    table = [[_short(row.get(c), c) for c in columns] for row in rows]
    widths = [None if c in _WHOLE_IDS else 24 for c in columns]
    return tabulate(table, headers=[_HEADERS.get(c, c.upper()) for c in columns],
                    tablefmt="simple", maxcolwidths=widths or None)


def _as_dicts(records) -> list[dict]:
    return [{k: v for k, v in r.asdict().items()} for r in records]


_format = click.option("--format", "fmt", type=click.Choice(["default", "table", "json", "yaml"]),
                       default="default", help="Output format (default: a table; yaml with --detail).")
_address = click.option("--address", default=None, help="GCS address; default: the local cluster.")
_timeout = click.option("--timeout", default=30, show_default=True, help="Seconds to wait.")


def register(main: click.Group) -> None:
    """Add the observability commands to the ``ember`` command group."""
    for command in (list_cmd, get_cmd, summary, logs, timeline):
        main.add_command(command)


@click.command("list")
@click.argument("resource", type=click.Choice(list(_LISTERS)))
@click.option("--filter", "filters", multiple=True,
              help="KEY=VALUE or KEY!=VALUE; repeat to combine. E.g. --filter 'state=ALIVE'.")
@click.option("--limit", default=100, show_default=True, help="At most this many rows.")
@click.option("--detail", is_flag=True, help="Every field of each row.")
@_format
@_address
@_timeout
def list_cmd(resource, filters, limit, detail, fmt, address, timeout):
    """List tasks, actors, objects, nodes, workers, jobs or placement groups."""
    parsed = [parse_filter(f) for f in filters]
    rows = _call(_LISTERS[resource], address=address, filters=parsed, limit=limit,
                 timeout=timeout, detail=detail, raise_on_missing_output=False)
    if fmt == "default":
        fmt = "yaml" if detail else "table"
    columns = None if detail else list(TABLE_COLUMNS[resource])
    data = _as_dicts(rows)
    if not detail:
        data = [{c: row.get(c) for c in columns} for row in data] if fmt != "table" else data
    if fmt == "table":
        click.echo(f"Total: {len(data)}\n")
    click.echo(render(data, fmt, columns))


@click.command("get")
@click.argument("resource", type=click.Choice([r for r in _ID_FIELD if r != "jobs"]))
@click.argument("id")
@_address
@_timeout
def get_cmd(resource, id, address, timeout):
    """Every field of one task, actor, node, worker, placement group or object (by id or
    an unambiguous prefix of it)."""
    key = _ID_FIELD[resource]
    rows = _call(_LISTERS[resource], address=address, limit=0, timeout=timeout, detail=True,
                 raise_on_missing_output=False)
    found = [r for r in rows if (getattr(r, key) or "").startswith(id.lower())]
    if not found:
        raise click.ClickException(
            f"No {resource[:-1].replace('-', ' ')} with {key} {id!r} in the cluster"
            f" ({len(rows)} known; `ember list {resource}` shows them).")
    ids = {getattr(r, key) for r in found}
    if len(ids) > 1:
        raise click.ClickException(f"{id!r} is a prefix of {len(ids)} {key}s: "
                                   f"{', '.join(sorted(ids)[:5])}; give more of the id.")
    click.echo(render(_as_dicts(found), "yaml"))


@click.command("summary")
@click.argument("resource", type=click.Choice(["tasks", "actors", "objects"]))
@_format
@_address
@_timeout
def summary(resource, fmt, address, timeout):
    """Tasks by function, actors by class, objects by call site, with counts per state."""
    fn = {"tasks": api.summarize_tasks, "actors": api.summarize_actors,
          "objects": api.summarize_objects}[resource]
    result = _call(fn, address=address, timeout=timeout, raise_on_missing_output=False)
    if fmt in ("json", "yaml"):
        click.echo(render(result, fmt))
        return
    groups = result["cluster"]["summary"]
    totals = {k: v for k, v in result["cluster"].items() if k != "summary"}
    click.echo("  ".join(f"{k}: {v}" for k, v in totals.items()) + "\n")
    rows = [{"name": name, **{k: (", ".join(f"{s}: {n}" for s, n in v.items())
                                 if isinstance(v, dict) else v)
                             for k, v in group.items() if k not in ("func_or_class_name",
                                                                    "class_name")}}
            for name, group in groups.items()]
    click.echo(render(rows, "table"))


@click.group("logs", cls=_StateErrors)
def logs():
    """Print the cluster's log files, or an actor's, a task's or a worker's log."""


_tail = click.option("--tail", default=1000, show_default=True,
                     help="Print the last N lines (-1: all).")
_follow = click.option("--follow", "-f", is_flag=True, help="Keep printing lines as they come.")
_node = click.option("--node-id", default=None, help="The node (default: the head).")
_suffix = click.option("--err", is_flag=True, help="The worker's stderr, not its stdout.")


@logs.command("cluster")
@click.argument("glob", required=False, default=None)
@_node
@_tail
@_follow
@_address
def logs_cluster(glob, node_id, tail, follow, address):
    """List a node's log files; with a GLOB matching one file, print it."""
    files = api.list_logs(address=address, node_id=node_id, glob_filter=glob or "*")
    names = [n for group in files.values() for n in group]
    if glob and len(names) == 1:
        _echo_lines(api.get_log(address=address, node_id=node_id, filename=names[0],
                                tail=tail, follow=follow))
        return
    for group, group_names in files.items():
        click.echo(f"{group}:")
        for name in group_names:
            click.echo(f"  {name}")


@logs.command("actor")
@click.option("--id", "actor_id", required=True, help="The actor's id.")
@_suffix
@_tail
@_follow
@_address
def logs_actor(actor_id, err, tail, follow, address):
    """The log of the worker that hosts an actor."""
    _echo_lines(api.get_log(address=address, actor_id=actor_id, tail=tail, follow=follow,
                            suffix="err" if err else "out"))


@logs.command("task")
@click.option("--id", "task_id", required=True, help="The task's id.")
@click.option("--attempt-number", default=0, show_default=True)
@_suffix
@_tail
@_follow
@_address
def logs_task(task_id, attempt_number, err, tail, follow, address):
    """The log of the worker that ran a task."""
    _echo_lines(api.get_log(address=address, task_id=task_id, attempt_number=attempt_number,
                            tail=tail, follow=follow, suffix="err" if err else "out"))


@logs.command("worker")
@click.option("--pid", required=True, type=int, help="The worker's process id.")
@_suffix
@_tail
@_follow
@_address
def logs_worker(pid, err, tail, follow, address):
    """The log of a live worker, by its pid."""
    _echo_lines(api.get_log(address=address, pid=pid, tail=tail, follow=follow,
                            suffix="err" if err else "out"))


@click.command("timeline")
@click.option("--output", "-o", default=None,
              help="Where to write the trace (default: a new file in the temp directory).")
@_address
@_timeout
def timeline(output, address, timeout):
    """Write task events as a Chrome trace JSON (load it in Perfetto or chrome://tracing)."""
    from .timeline import timeline as write_timeline
    if output is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        output = os.path.join(tempfile.gettempdir(), f"ember-timeline-{stamp}.json")
    events = _call(write_timeline, filename=output, address=address, timeout=timeout)
    click.echo(f"Trace file written to {output} ({len(events)} events). Open it in "
               "https://ui.perfetto.dev or chrome://tracing.")


def _call(fn, **kwargs):
    try:
        return fn(**kwargs)
    except (ValueError, ConnectionError, RayStateApiException) as exc:
        raise click.ClickException(str(exc)) from None


def _echo_lines(lines) -> None:
    try:
        for line in lines:
            click.echo(line)
    except (ValueError, ConnectionError, RayStateApiException) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass

