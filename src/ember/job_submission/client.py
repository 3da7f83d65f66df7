"""``JobSubmissionClient``: submit and follow jobs through a dashboard's Jobs REST API.

It speaks HTTP to the dashboard only (``ember.dashboard.jobs_routes``), never
to the GCS, so it works from any machine that can reach the dashboard, and
needs no ember cluster token unless the dashboard listens beyond loopback
(then ``EMBER_AUTH_TOKEN``, or ``headers={"Authorization": "Bearer ..."}``).

The calls that return once are plain ``urllib`` (no extra dependency);
``tail_job_logs`` follows a websocket, and needs aiohttp.

Errors follow Ray's client: ``ConnectionError`` when no dashboard answers at
the address, ``RuntimeError("Request failed with status code N: <text>")``
when the API refuses a request; the text is the dashboard's own message.
A malformed ``runtime_env`` is refused here, before anything is sent.
"""
from __future__ import annotations

import json
import os
import typing
import urllib.error
import urllib.parse
import urllib.request

from .. import dashboard, node
from .. import runtime_env as runtime_env_mod
from ..rpc import auth
from .models import JobDetails, JobStatus

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: Seconds a request may take (an upload of a large working_dir included).
TIMEOUT_S = 120.0


def resolve_address(address: str | None) -> str:
    """The dashboard URL: ``address``, else ``EMBER_ADDRESS`` / ``RAY_ADDRESS`` if
    they are http(s) URLs, else this machine's cluster's dashboard, else
    :data:`DEFAULT_ADDRESS`."""
    if not address:
        for name in ("EMBER_ADDRESS", "RAY_ADDRESS"):
            value = os.environ.get(name, "")
            if value.startswith(("http://", "https://")):
                address = value
                break
    if not address or address == "auto":
        address = _local_dashboard() or DEFAULT_ADDRESS
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise ValueError(f"The dashboard address {address!r} must be an http:// or https:// "
                         "URL, e.g. http://127.0.0.1:8265.")
    return address.rstrip("/")


def _local_dashboard() -> str | None:
    """The dashboard of the cluster ``ember start`` recorded on this machine, if any."""
    session_dir = node.read_current_session_dir()
    return dashboard.read_url(session_dir) if session_dir else None


class JobSubmissionClient:
    def __init__(self, address: str | None = None, create_cluster_if_needed: bool = False,
                 cookies: dict | None = None, metadata: dict | None = None,
                 headers: dict | None = None, verify: bool = True):
        self._address = resolve_address(address)
        self._headers = dict(headers or {})
        token = os.environ.get(auth.ENV_TOKEN, "").strip()
        if token and "Authorization" not in self._headers:
            self._headers["Authorization"] = f"Bearer {token}"
        if cookies:
            self._headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        self._default_metadata = dict(metadata or {})
        self._version = self._request("GET", "/api/version")

    @property
    def address(self) -> str:
        return self._address

    # --- jobs -----------------------------------------------------------------------

    def submit_job(self, *, entrypoint: str, job_id: str | None = None,
                   runtime_env: dict | None = None, metadata: dict | None = None,
                   submission_id: str | None = None,
                   entrypoint_num_cpus: float | None = None,
                   entrypoint_num_gpus: float | None = None,
                   entrypoint_memory: int | None = None,
                   entrypoint_resources: dict | None = None) -> str:
        """Submit ``entrypoint`` (a shell command); returns the job's submission id.

        A local ``working_dir`` or ``py_modules`` in ``runtime_env`` is zipped
        here and uploaded to the cluster first (once per content).
        """
        runtime_env = dict(runtime_env or {})
        runtime_env_mod.validate(runtime_env)
        runtime_env = runtime_env_mod.with_packages(runtime_env, self._upload_package,
                                                    "submit_job()")
        body = {"entrypoint": entrypoint, "submission_id": submission_id or job_id,
                "runtime_env": runtime_env,
                "metadata": {**self._default_metadata, **(metadata or {})},
                "entrypoint_num_cpus": entrypoint_num_cpus,
                "entrypoint_num_gpus": entrypoint_num_gpus,
                "entrypoint_memory": entrypoint_memory,
                "entrypoint_resources": entrypoint_resources}
        reply = self._request("POST", "/api/jobs/",
                              {k: v for k, v in body.items() if v is not None})
        return reply["submission_id"]

    def get_job_info(self, job_id: str) -> JobDetails:
        return JobDetails.from_json(self._request("GET", f"/api/jobs/{_quote(job_id)}"))

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.get_job_info(job_id).status

    def list_jobs(self) -> list[JobDetails]:
        return [JobDetails.from_json(job) for job in self._request("GET", "/api/jobs/")]

    def get_job_logs(self, job_id: str) -> str:
        return self._request("GET", f"/api/jobs/{_quote(job_id)}/logs")["logs"]

    def stop_job(self, job_id: str) -> bool:
        """Stop a job (SIGTERM, then SIGKILL); False if it had already ended."""
        return self._request("POST", f"/api/jobs/{_quote(job_id)}/stop")["stopped"]

    def delete_job(self, job_id: str) -> bool:
        """Forget an ended job (its record and log); a RuntimeError if it still runs."""
        return self._request("DELETE", f"/api/jobs/{_quote(job_id)}")["deleted"]

    async def tail_job_logs(self, job_id: str) -> typing.AsyncIterator[str]:
        """The job's log from its start, chunk by chunk as it is written, until it ends."""
        try:
            import aiohttp  # only here: the other calls need no more than urllib
        except ImportError:
            raise RuntimeError("Following a job's log needs aiohttp: pip install "
                               "'ember[dashboard]' (or use get_job_logs).") from None
        self.get_job_info(job_id)  # a clear error for an unknown job, before the upgrade
        url = self._address.replace("http", "ws", 1) + f"/api/jobs/{_quote(job_id)}/logs/tail"
        async with aiohttp.ClientSession(headers=self._headers) as session:
            async with session.ws_connect(url) as ws:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        yield message.data
                    elif message.type == aiohttp.WSMsgType.ERROR:
                        raise ConnectionError(f"The log stream of job {job_id} broke: "
                                              f"{ws.exception()}")

    # --- HTTP -----------------------------------------------------------------------

    def _upload_package(self, uri: str, make_data) -> None:
        path = "/api/packages/" + uri.replace("://", "/", 1)
        if self._request("GET", path, missing_ok=True) is not None:
            return
        self._request("PUT", path, make_data(), raw=True)

    def _request(self, method: str, path: str, body=None, *, raw: bool = False,
                 missing_ok: bool = False):
        data = body if raw or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._address + path, data=data, method=method,
                                         headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None
            text = exc.read().decode(errors="replace").strip()
            try:  # the auth middleware answers JSON
                text = json.loads(text)["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise RuntimeError(f"Request failed with status code {exc.code}: {text}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(
                f"Could not reach an ember dashboard at {self._address} ({reason}). Is the "
                "cluster running (`ember start --head` prints the dashboard's URL), and is "
                "the address right?") from None
        return json.loads(payload) if payload else {}


def _quote(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")
