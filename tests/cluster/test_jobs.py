"""The Jobs API end to end: a real head with its dashboard, over real HTTP.

One cluster (with its dashboard) serves the module; the Redis test stops it
and runs a cluster of its own, so that only one runs at a time. Every job's
outcome is read back through the API as a user would, and a stopped job's
processes are looked up by pid.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import psutil
import pytest
from click.testing import CliRunner

import ember
from ember import dashboard
from ember.cli import main as cli
from ember.job_submission import JobStatus, JobSubmissionClient
from ember.node import free_port
from ember.util.state import list_nodes
from helpers import wait_for_condition

pytestmark = pytest.mark.timeout(120)


class DashboardCluster:
    """The module's cluster: started on first use, stoppable for a test that needs another."""

    def __init__(self):
        self.url = None

    def ensure(self) -> str:
        if self.url is None or not ember.is_initialized():
            if ember.is_initialized():
                ember.shutdown()
            ctx = ember.init(num_cpus=2, include_dashboard=True)
            self.url = "http://" + ctx.dashboard_url
            assert dashboard.read_url(ctx["session_dir"]) == self.url
            # The process starts at the first connection; that one waits and is served.
            assert ember.worker._local_node.dashboard.process is None
            wait_until_serving(self.url, os.path.basename(ctx["session_dir"]))
            assert ember.worker._local_node.dashboard.process.poll() is None
        return self.url

    def stop(self) -> None:
        if ember.is_initialized():
            ember.shutdown()
        self.url = None


def wait_until_serving(url: str, session_name: str) -> None:
    """Wait for the dashboard at ``url`` to answer as this session's."""
    def serving():
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=5) as response:
                return json.loads(response.read())["session_name"] == session_name
        except OSError:
            return False
    wait_for_condition(serving, timeout=30, message=f"the dashboard at {url}")


@pytest.fixture(scope="module")
def cluster():
    running = DashboardCluster()
    yield running
    running.stop()


@pytest.fixture
def client(cluster) -> JobSubmissionClient:
    return JobSubmissionClient(cluster.ensure())


def wait_for_status(client, submission_id, status: JobStatus, timeout=60.0):
    def reached():
        current = client.get_job_status(submission_id)
        assert current is status or not current.is_terminal(), \
            f"job {submission_id} ended {current}: {client.get_job_info(submission_id).message}"
        return current is status
    wait_for_condition(reached, timeout=timeout, interval=0.1,
                       message=f"job {submission_id} to be {status.value}")
    return client.get_job_info(submission_id)


def http(url: str, method: str = "GET", body: bytes | None = None, headers=None):
    """(status, body text) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- jobs that run --------------------------------------------------------------------

def test_job_with_working_dir_and_env_vars_succeeds(client, tmp_path):
    """The entrypoint runs in the uploaded working_dir with the env_vars; so do its tasks."""
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "greeting.py").write_text("WORDS = 'hello from the working_dir'\n")
    (workdir / "main.py").write_text(textwrap.dedent("""
        import os
        import ember
        import greeting

        ember.init()

        @ember.remote
        def in_a_task():
            import greeting
            return greeting.WORDS + " / " + os.environ["JOB_COLOR"]

        print(greeting.WORDS, os.environ["JOB_COLOR"], os.path.basename(os.getcwd()) != "")
        print("task says:", ember.get(in_a_task.remote()))
        print("driver:", ember.get_runtime_context().get_job_id(), os.getpid())
    """))
    submission_id = client.submit_job(
        entrypoint="python main.py", metadata={"owner": "tests"},
        runtime_env={"working_dir": str(workdir), "env_vars": {"JOB_COLOR": "teal"}})
    info = wait_for_status(client, submission_id, JobStatus.SUCCEEDED)
    logs = client.get_job_logs(submission_id)
    assert "hello from the working_dir teal True" in logs
    assert "task says: hello from the working_dir / teal" in logs
    assert info.driver_exit_code == 0 and info.message == "Job finished successfully."
    assert info.entrypoint == "python main.py" and info.metadata == {"owner": "tests"}
    assert info.runtime_env["working_dir"].startswith("gcs://working_dir/")
    assert info.start_time <= info.end_time
    assert info.driver_node_id == ember.get_runtime_context().get_node_id()
    # The entrypoint's ember.init() made a driver: the job names it, as Ray's does.
    assert f"driver: {info.job_id} {info.driver_info.pid}\n" in logs
    assert info.type.value == "SUBMISSION"
    assert submission_id in {job.submission_id for job in client.list_jobs()}


def test_failed_job_reports_its_exit_code(client):
    submission_id = client.submit_job(
        entrypoint="python -c \"import sys; print('about to fail'); sys.exit(3)\"")
    info = wait_for_status(client, submission_id, JobStatus.FAILED)
    assert info.driver_exit_code == 3
    assert "exit code 3" in info.message and "about to fail" in info.message


def test_entrypoint_that_does_not_exist_fails_clearly(client):
    submission_id = client.submit_job(entrypoint="no_such_command_ember_test --flag")
    info = wait_for_status(client, submission_id, JobStatus.FAILED)
    assert info.driver_exit_code == 127
    assert "exit code 127" in info.message and "not found" in info.message


def test_stop_ends_every_process_of_the_job(client, tmp_path):
    """SIGTERM then SIGKILL to the group: a child that ignores SIGTERM goes too."""
    pids = tmp_path / "pids"
    entrypoint = (
        f"{sys.executable} -c \"import os, signal, time; signal.signal(signal.SIGTERM, "
        f"signal.SIG_IGN); open('{pids}', 'a').write(str(os.getpid()) + ' '); "
        "time.sleep(300)\" & "
        f"echo $$ >> {pids}; sleep 300")
    submission_id = client.submit_job(entrypoint=entrypoint)
    wait_for_status(client, submission_id, JobStatus.RUNNING)
    wait_for_condition(lambda: pids.exists() and len(pids.read_text().split()) == 2,
                       timeout=30, message="both processes of the job to start")
    procs = [psutil.Process(int(pid)) for pid in pids.read_text().split()]
    assert client.stop_job(submission_id) is True
    info = wait_for_status(client, submission_id, JobStatus.STOPPED)
    assert info.message == "Job was intentionally stopped."

    def gone(proc):
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_for_condition(lambda: all(gone(p) for p in procs), timeout=30,
                       message="the job's processes to exit")
    assert client.stop_job(submission_id) is False  # already stopped


def test_tail_job_logs_follows_a_running_job(client, tmp_path):
    """The tail delivers output while the job runs, and ends when the job does."""
    go_on = tmp_path / "go-on"
    submission_id = client.submit_job(entrypoint=(
        f"echo first line; while [ ! -e {go_on} ]; do sleep 0.05; done; echo second line"))

    async def follow():
        seen = ""
        async for chunk in client.tail_job_logs(submission_id):
            seen += chunk
            if "first line" in seen and not go_on.exists():
                # Only the tail can tell us this: the job waits for us to go on.
                go_on.write_text("")
        return seen
    seen = asyncio.run(asyncio.wait_for(follow(), 60))
    assert seen == "first line\nsecond line\n"
    assert client.get_job_status(submission_id) is JobStatus.SUCCEEDED


def test_two_jobs_run_at_once(client, tmp_path):
    """Each job waits for the other's file: both finish only if both run together."""
    def waits_for(mine, theirs):
        return (f"touch {tmp_path / mine}; while [ ! -e {tmp_path / theirs} ]; "
                "do sleep 0.05; done; echo done")
    first = client.submit_job(entrypoint=waits_for("a", "b"))
    second = client.submit_job(entrypoint=waits_for("b", "a"))
    for submission_id in (first, second):
        wait_for_status(client, submission_id, JobStatus.SUCCEEDED)
        assert client.get_job_logs(submission_id) == "done\n"


def test_delete_forgets_an_ended_job_and_refuses_a_running_one(client):
    submission_id = client.submit_job(entrypoint="sleep 300")
    wait_for_status(client, submission_id, JobStatus.RUNNING)
    with pytest.raises(RuntimeError, match="status code 400: .*non-terminal state RUNNING"):
        client.delete_job(submission_id)
    client.stop_job(submission_id)
    wait_for_status(client, submission_id, JobStatus.STOPPED)
    assert client.delete_job(submission_id) is True
    with pytest.raises(RuntimeError, match=f"status code 404: Job {submission_id} does not"):
        client.get_job_info(submission_id)


# --- bad input --------------------------------------------------------------------------

def test_bad_requests_get_a_clear_4xx_and_the_dashboard_stays_up(client, cluster):
    url = cluster.ensure()
    cases = [
        (("POST", "/api/jobs/", b"{not json"), 400, "The request body is not JSON"),
        (("POST", "/api/jobs/", b'{"runtime_env": {}}'), 400, "'entrypoint' must be"),
        (("POST", "/api/jobs/", json.dumps({"entrypoint": "true", "runtime_env": {
            "pip": ["requests"]}}).encode()), 400, "Invalid runtime_env: runtime_env field "
         "'pip' is not supported"),
        (("POST", "/api/jobs/", json.dumps({"entrypoint": "true", "runtime_env": {
            "env_vars": {"A": 1}}}).encode()), 400, "runtime_env['env_vars']['A'] must be a str"),
        (("POST", "/api/jobs/", json.dumps({"entrypoint": "true", "runtime_env": {
            "working_dir": "/home/me/project"}}).encode()), 400, "is a local path on the "
         "submitting machine"),
        (("POST", "/api/jobs/", json.dumps({"entrypoint": "true", "runtime_env": {
            "working_dir": "gcs://working_dir/0123abcd"}}).encode()), 400,
         "the package gcs://working_dir/0123abcd was not uploaded"),
        (("GET", "/api/jobs/no-such-job", None), 404, "Job no-such-job does not exist."),
        (("GET", "/api/jobs/no-such-job/logs", None), 404, "Job no-such-job does not exist."),
        (("POST", "/api/jobs/no-such-job/stop", None), 404, "Job no-such-job does not exist."),
        (("DELETE", "/api/jobs/no-such-job", None), 404, "Job no-such-job does not exist."),
        (("PUT", "/api/packages/gcs/not-a-kind/abc", b"zip"), 400, "is not an ember package"),
    ]
    for (method, path, body), status, message in cases:
        got_status, text = http(url + path, method, body)
        assert (got_status, message in text) == (status, True), (method, path, text)
    status, text = http(url + "/api/version")
    assert status == 200 and json.loads(text)["version"] == "4"


def test_duplicate_submission_id_is_refused(client):
    client.submit_job(entrypoint="true", submission_id="twice")
    with pytest.raises(RuntimeError, match="status code 400: Job with submission_id twice "
                                           "already exists"):
        client.submit_job(entrypoint="echo other", submission_id="twice")
    info = wait_for_status(client, "twice", JobStatus.SUCCEEDED)
    assert info.entrypoint == "true"  # the first submission stands


def test_client_refuses_a_malformed_runtime_env_before_sending(client):
    with pytest.raises(ValueError, match="runtime_env field 'conda' is not supported"):
        client.submit_job(entrypoint="true", runtime_env={"conda": "env"})
    with pytest.raises(ValueError, match="is not an existing directory"):
        client.submit_job(entrypoint="true", runtime_env={"working_dir": "/no/such/dir"})


def test_client_to_an_address_where_nothing_listens():
    with pytest.raises(ConnectionError, match=r"Could not reach an ember dashboard at "
                                              r"http://127.0.0.1:\d+ \(.*refused"):
        JobSubmissionClient(f"http://127.0.0.1:{free_port()}")


# --- the CLI ------------------------------------------------------------------------------

def test_cli_submit_follows_the_logs_and_exits_with_the_jobs_outcome(cluster, tmp_path):
    url = cluster.ensure()
    (tmp_path / "hello.py").write_text("print('hello from', __file__.rsplit('/', 1)[-1])\n")
    ok = CliRunner().invoke(cli, ["job", "submit", "--address", url, "--working-dir",
                                  str(tmp_path), "--submission-id", "cli-ok", "--",
                                  "python", "hello.py"])
    assert ok.exit_code == 0, ok.output
    assert "hello from hello.py" in ok.output and "SUCCEEDED" in ok.output
    failed = CliRunner().invoke(cli, ["job", "submit", "--address", url, "--", "sh", "-c",
                                      "echo bye; exit 4"])
    assert failed.exit_code == 1 and "bye" in failed.output
    assert "FAILED: Job entrypoint command failed with exit code 4" in failed.output
    status = CliRunner().invoke(cli, ["job", "status", "--address", url, "cli-ok"])
    assert "Status for job 'cli-ok': SUCCEEDED" in status.output
    listed = CliRunner().invoke(cli, ["job", "list", "--address", url])
    assert "cli-ok" in listed.output and "python hello.py" in listed.output
    logs = CliRunner().invoke(cli, ["job", "logs", "--address", url, "cli-ok"])
    assert logs.output == "hello from hello.py\n"


@pytest.mark.parametrize("args, message", [
    (["job", "status", "no-such-job"], "Error: Request failed with status code 404: Job "
                                       "no-such-job does not exist."),
    (["job", "submit", "--submission-id", "cli-dup", "--no-wait", "--", "true"],
     "already exists"),
    (["job", "submit", "--runtime-env-json", "[1]", "--", "true"], "must be a JSON object"),
    (["job", "submit", "--runtime-env-json", '{"pip": ["x"]}', "--", "true"],
     "Error: runtime_env field 'pip' is not supported"),
])
def test_cli_errors_are_one_line(cluster, args, message):
    url = cluster.ensure()
    if "cli-dup" in args:
        CliRunner().invoke(cli, ["job", "submit", "--address", url, "--submission-id",
                                 "cli-dup", "--no-wait", "--", "true"])
    result = CliRunner().invoke(cli, args[:2] + ["--address", url] + args[2:])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_cli_where_nothing_listens_is_one_line():
    result = CliRunner().invoke(cli, ["job", "list", "--address",
                                      f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: Could not reach an ember dashboard at")
    assert len(result.output.strip().splitlines()) == 1


def start_dashboard_process(host: str = "127.0.0.1") -> tuple[subprocess.Popen, str]:
    """A dashboard process of the test's own for the module's cluster (as the head starts one)."""
    core = ember.worker.context.core
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ember.dashboard", "--gcs-address", core.gcs_address,
         "--session-dir", core.session_dir, "--host", host, "--port", str(port)],
        env=dict(os.environ, EMBER_AUTH_TOKEN_FILE=os.path.join(core.session_dir,
                                                                "auth_token")),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


# --- auth -----------------------------------------------------------------------------------

def test_dashboard_off_loopback_requires_the_token(cluster, monkeypatch):
    """A dashboard bound to every interface answers 401 to requests without the token."""
    cluster.ensure()
    session_dir = ember.worker.context.core.session_dir
    token = open(os.path.join(session_dir, "auth_token")).read().strip()
    proc, url = start_dashboard_process(host="0.0.0.0")
    try:
        bearer = {"Authorization": f"Bearer {token}"}

        def serving():
            try:
                return http(url + "/api/version", headers=bearer)[0] == 200
            except OSError:
                return False
        wait_for_condition(serving, timeout=30, message="the token-guarded dashboard")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "ember_token=x"}):
            status, text = http(url + "/api/jobs/", headers=headers)
            assert status == 401 and "requires the cluster token" in json.loads(text)["message"]
        assert http(url + "/api/jobs/", headers={"Cookie": f"ember_token={token}"})[0] == 200
        with pytest.raises(RuntimeError, match="status code 401: This dashboard requires"):
            JobSubmissionClient(url)
        monkeypatch.setenv("EMBER_AUTH_TOKEN", token)
        assert isinstance(JobSubmissionClient(url).list_jobs(), list)
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_restarted_dashboard_takes_up_running_jobs(cluster, tmp_path):
    """Kill the dashboard while a job runs: the job goes on, and a new dashboard
    records its end, stops it, or notices its supervisor die."""
    cluster.ensure()
    head_dashboard = ember.worker._local_node.dashboard.process
    client = JobSubmissionClient(cluster.url)
    release = tmp_path / "release"
    finishing = client.submit_job(entrypoint=f"while [ ! -e {release} ]; do sleep 0.05; done")
    stopping = client.submit_job(entrypoint="sleep 300")
    dying = client.submit_job(entrypoint=f"echo $PPID > {tmp_path / 'launcher'}; sleep 300")
    for submission_id in (finishing, stopping, dying):
        wait_for_status(client, submission_id, JobStatus.RUNNING)
    head_dashboard.kill()
    head_dashboard.wait(10)
    proc, url = start_dashboard_process()
    try:
        wait_until_serving(url, os.path.basename(ember.worker.context.core.session_dir))
        client = JobSubmissionClient(url)
        release.write_text("")
        wait_for_status(client, finishing, JobStatus.SUCCEEDED)
        assert client.stop_job(stopping) is True
        wait_for_status(client, stopping, JobStatus.STOPPED)
        # The supervisor is the launcher's parent: kill it as the OOM killer would.
        launcher = psutil.Process(int((tmp_path / "launcher").read_text()))
        launcher.parent().kill()
        info = wait_for_status(client, dying, JobStatus.FAILED)
        assert "The job's supervisor failed (ActorDiedError)" in info.message
    finally:
        proc.terminate()
        proc.wait(10)
        cluster.stop()  # the module's cluster lost its own dashboard


# --- GCS fault tolerance ---------------------------------------------------------------------

@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("redis-server") is None,
                    reason="redis-server is not installed (apt-get install redis-server)")
def test_jobs_survive_a_gcs_restart_with_redis(cluster, tmp_path, monkeypatch):
    from test_gcs_fault_tolerance import RedisServer, cluster_on
    cluster.stop()  # one cluster at a time
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with cluster_on(redis, monkeypatch) as redis_cluster:
            head = redis_cluster.add_node(num_cpus=1, include_dashboard=True,
                                          dashboard_port=free_port())
            url = dashboard.read_url(head.session_dir)
            wait_until_serving(url, os.path.basename(head.session_dir))
            client = JobSubmissionClient(url)
            done = client.submit_job(entrypoint="echo before", submission_id="before")
            wait_for_status(client, done, JobStatus.SUCCEEDED)
            head.kill_gcs_server()
            head.start_gcs_server()
            jobs = {job.submission_id: job for job in client.list_jobs()}
            assert jobs["before"].status is JobStatus.SUCCEEDED
            assert jobs["before"].entrypoint == "echo before"
            # And the restarted cluster takes new jobs.
            after = client.submit_job(entrypoint="echo after", submission_id="after")
            wait_for_status(client, after, JobStatus.SUCCEEDED)
            assert client.get_job_logs("after") == "after\n"
    finally:
        redis.stop()


def test_job_waiting_for_resources_stays_pending_and_can_be_stopped(client):
    submission_id = client.submit_job(entrypoint="echo never",
                                      entrypoint_resources={"no_node_has_this": 1})
    info = client.get_job_info(submission_id)
    assert info.status is JobStatus.PENDING
    assert "It may be waiting for resources" in info.message
    assert client.stop_job(submission_id) is True
    info = wait_for_status(client, submission_id, JobStatus.STOPPED)
    assert client.get_job_logs(submission_id) == ""


def ember_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember.cli", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.timeout(180)
def test_ember_start_serves_jobs_and_ember_stop_leaves_nothing(cluster, temp_root, tmp_path):
    """`ember start --head` prints the URL, `ember dashboard` finds it, a job that asks
    for a resource runs on the node that has it, and `ember stop` ends the dashboard
    and a running job's processes with the rest."""
    from helpers import wait_no_ember_processes
    cluster.stop()  # one cluster at a time
    port = free_port()
    started = ember_cli("start", "--head", "--port", str(free_port()), "--num-cpus", "1",
                        "--dashboard-port", str(port))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"View the dashboard at http://127.0.0.1:{port}\n" in started.stdout
        assert ember_cli("dashboard").stdout == f"http://127.0.0.1:{port}\n"
        gcs_address = started.stdout.split("head node at ")[1].split(".\n")[0]
        joined = ember_cli("start", "--address", gcs_address, "--num-cpus", "1",
                           "--resources", '{"only_on_the_second_node": 1}')
        assert joined.returncode == 0, joined.stdout + joined.stderr
        client = JobSubmissionClient()  # finds this machine's cluster's dashboard
        assert client.address == f"http://127.0.0.1:{port}"

        there = client.submit_job(entrypoint="echo on the second node",
                                  entrypoint_resources={"only_on_the_second_node": 1})
        info = wait_for_status(client, there, JobStatus.SUCCEEDED)
        second = [n for n in list_nodes(address=gcs_address)
                  if not n.is_head_node]
        assert info.driver_node_id == second[0].node_id
        # Its log is in the second node's session directory, served all the same.
        head_logs = os.path.join(ember.node.read_current_session_dir(), "logs")
        assert not os.path.exists(os.path.join(head_logs, f"job-driver-{there}.log"))
        assert client.get_job_logs(there) == "on the second node\n"

        pid_file = tmp_path / "pid"
        running = client.submit_job(entrypoint=f"echo $$ > {pid_file}; sleep 300")
        wait_for_status(client, running, JobStatus.RUNNING)
        wait_for_condition(lambda: pid_file.exists() and pid_file.read_text().strip(),
                           message="the job to start")
        job = psutil.Process(int(pid_file.read_text()))
    finally:
        stopped = ember_cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_no_ember_processes(temp_root)
    wait_for_condition(lambda: not job.is_running() or job.status() == psutil.STATUS_ZOMBIE,
                       timeout=30, message="the job's process to end")
    assert "No dashboard found" in ember_cli("dashboard").stderr


def test_without_aiohttp_a_head_starts_no_dashboard(cluster, monkeypatch, caplog):
    cluster.stop()  # one cluster at a time
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r"include_dashboard=True needs aiohttp: pip install "
                                         r"'ember\[dashboard\]'"):
        ember.init(num_cpus=1, include_dashboard=True)
    ember_logger = logging.getLogger("ember")  # it does not propagate to caplog's root
    ember_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="ember"):
            ctx = ember.init(num_cpus=1)
    finally:
        ember_logger.removeHandler(caplog.handler)
    try:
        assert ctx.dashboard_url is None
        assert dashboard.read_url(ctx["session_dir"]) is None
        assert "Not starting the dashboard: it needs aiohttp" in caplog.text
        assert ember.worker._local_node.dashboard is None
    finally:
        ember.shutdown()
