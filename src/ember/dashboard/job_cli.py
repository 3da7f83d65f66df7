"""``ember job ...`` and ``ember dashboard``: the Jobs API from a shell, as ``ray job``.

    ember job submit [--address URL] [--working-dir DIR] [--runtime-env-json JSON]
                     [--submission-id ID] [--no-wait] -- ENTRYPOINT...
    ember job status|logs [--follow]|stop|delete ID
    ember job list
    ember dashboard                      # the local cluster's dashboard URL

Every command is a :class:`~ember.job_submission.JobSubmissionClient` call;
its errors become one line (``click.ClickException``), never a traceback.
``submit`` follows the job's log until it ends, and exits non-zero unless it
SUCCEEDED, so a shell script can rely on it.
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import shlex

import click

from .. import dashboard as dashboard_mod
from .. import node as node_mod
from ..cli_options import parse_json_object
from ..job_submission import JobStatus, JobSubmissionClient

_ADDRESS = click.option(
    "--address", default=None,
    help="The dashboard's URL (default: EMBER_ADDRESS or RAY_ADDRESS if http, else the "
         "local cluster's dashboard, else http://127.0.0.1:8265).")


def _one_line_errors(command):
    @functools.wraps(command)
    def wrapped(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.BadParameter as exc:  # one line, without the usage text
            raise click.ClickException(exc.format_message()) from None
        except (ConnectionError, RuntimeError, ValueError, TypeError) as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None
    return wrapped


@click.group()
def job():
    """Submit, follow and stop jobs through the dashboard's Jobs API."""


@job.command(context_settings={"ignore_unknown_options": True})
@_ADDRESS
@click.option("--working-dir", default=None, type=click.Path(),
              help="A local directory to ship with the job; the entrypoint runs in it.")
@click.option("--runtime-env-json", default=None, help="The job's runtime_env, as JSON.")
@click.option("--metadata-json", default=None, help="Metadata (string to string), as JSON.")
@click.option("--submission-id", default=None, help="The job's id (default: a new one).")
@click.option("--entrypoint-num-cpus", type=float, default=None)
@click.option("--entrypoint-num-gpus", type=float, default=None)
@click.option("--entrypoint-memory", type=int, default=None)
@click.option("--entrypoint-resources", default=None, help="Custom resources, as JSON.")
@click.option("--no-wait", is_flag=True, help="Return once submitted; do not follow the logs.")
@click.argument("entrypoint", nargs=-1, required=True, type=click.UNPROCESSED)
@_one_line_errors
def submit(address, working_dir, runtime_env_json, metadata_json, submission_id,
           entrypoint_num_cpus, entrypoint_num_gpus, entrypoint_memory,
           entrypoint_resources, no_wait, entrypoint):
    """Submit ENTRYPOINT (a shell command, after --) and follow its logs."""
    runtime_env = parse_json_object(runtime_env_json, "--runtime-env-json")
    if working_dir is not None:
        runtime_env["working_dir"] = working_dir
    client = JobSubmissionClient(address)
    submission_id = client.submit_job(
        entrypoint=shlex.join(entrypoint), submission_id=submission_id,
        runtime_env=runtime_env, metadata=parse_json_object(metadata_json, "--metadata-json"),
        entrypoint_num_cpus=entrypoint_num_cpus, entrypoint_num_gpus=entrypoint_num_gpus,
        entrypoint_memory=entrypoint_memory,
        entrypoint_resources=parse_json_object(entrypoint_resources, "--entrypoint-resources")
        or None)
    click.echo(f"Job '{submission_id}' submitted successfully.", err=True)
    if no_wait:
        click.echo(f"Query its status with `ember job status {submission_id}`, its logs "
                   f"with `ember job logs {submission_id} --follow`.", err=True)
        return
    _follow(client, submission_id)
    _exit_with_status(client, submission_id)


@job.command()
@_ADDRESS
@click.argument("submission_id")
@_one_line_errors
def status(address, submission_id):
    """Print a job's status and its message."""
    info = JobSubmissionClient(address).get_job_info(submission_id)
    click.echo(f"Status for job '{submission_id}': {info.status.value}")
    click.echo(f"Status message: {info.message}")


@job.command()
@_ADDRESS
@click.option("--follow", "-f", is_flag=True, help="Follow the log until the job ends.")
@click.argument("submission_id")
@_one_line_errors
def logs(address, follow, submission_id):
    """Print a job's log."""
    client = JobSubmissionClient(address)
    if follow:
        _follow(client, submission_id)
    else:
        click.echo(client.get_job_logs(submission_id), nl=False)


@job.command()
@_ADDRESS
@click.argument("submission_id")
@_one_line_errors
def stop(address, submission_id):
    """Stop a job: SIGTERM to its processes, then SIGKILL after a grace period."""
    client = JobSubmissionClient(address)
    if client.stop_job(submission_id):
        click.echo(f"Job '{submission_id}' was stopped.")
    else:
        status = client.get_job_status(submission_id)
        click.echo(f"Job '{submission_id}' had already ended ({status.value}).")


@job.command()
@_ADDRESS
@click.argument("submission_id")
@_one_line_errors
def delete(address, submission_id):
    """Delete an ended job's record and log."""
    JobSubmissionClient(address).delete_job(submission_id)
    click.echo(f"Job '{submission_id}' was deleted.")


@job.command("list")
@_ADDRESS
@_one_line_errors
def list_jobs(address):
    """List the submitted jobs."""
    from tabulate import tabulate
    rows = [(job.submission_id, job.status.value, _time(job.start_time), _time(job.end_time),
             _shorten(job.entrypoint)) for job in JobSubmissionClient(address).list_jobs()]
    click.echo(tabulate(rows, headers=("SUBMISSION ID", "STATUS", "START", "END",
                                       "ENTRYPOINT")) if rows else "No jobs.")


@click.command()
def dashboard():
    """Print the URL of the dashboard of the cluster `ember start` started here."""
    session_dir = node_mod.read_current_session_dir()
    url = dashboard_mod.read_url(session_dir) if session_dir else None
    if url is None:
        raise click.ClickException(
            "No dashboard found: no cluster was started on this machine with "
            "`ember start --head`, or it was started with --include-dashboard=false, or "
            "aiohttp is not installed (pip install 'ember[dashboard]').")
    click.echo(url)


def _follow(client: JobSubmissionClient, submission_id: str) -> None:
    async def tail():
        async for chunk in client.tail_job_logs(submission_id):
            click.echo(chunk, nl=False)
    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        click.echo(f"\nStopped following; the job goes on. `ember job stop {submission_id}` "
                   "stops it.", err=True)
        raise SystemExit(130) from None


def _exit_with_status(client: JobSubmissionClient, submission_id: str) -> None:
    info = client.get_job_info(submission_id)
    click.echo(f"Job '{submission_id}' {info.status.value}: {info.message.splitlines()[0]}",
               err=True)
    if info.status is not JobStatus.SUCCEEDED:
        raise SystemExit(1)


def _time(ms: int | None) -> str:
    return "" if ms is None else datetime.datetime.fromtimestamp(ms / 1000).strftime(
        "%Y-%m-%d %H:%M:%S")


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
