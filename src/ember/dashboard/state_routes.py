"""The state API over HTTP, with Ray's routes, query parameters and JSON envelope.

Ray's dashboard serves ``ray.util.state`` at ``/api/v0/<resource>``, so that
its CLI, its web UI and anyone's scripts read one interface. The facts this
module follows from Ray's ``state_head.py`` and ``state_api_utils.py``:

- list routes take ``limit`` (default 100, at most 10,000), ``timeout``
  (seconds), ``detail`` (a boolean: ``true``/``1``/``false``/``0``),
  ``exclude_driver`` (workers; default true) and filters as three repeated
  parameters of equal count, ``filter_keys``, ``filter_predicates`` (``=`` or
  ``!=``) and ``filter_values``;
- every JSON reply is ``{"result": ok, "msg": error or "", "data": {"result":
  ...}}``, a listing's ``data.result`` being ``{"total", "num_after_truncation",
  "num_filtered", "result": [records], "partial_failure_warning",
  "warnings"}``; a bad parameter is HTTP 400 and a cluster that cannot answer
  HTTP 500, each with the reason in ``msg``;
- ``/api/v0/logs`` lists a node's log files by category (``node_id`` or
  ``node_ip``, ``glob``); ``/api/v0/logs/file`` streams one, picked by
  ``filename``, ``actor_id``, ``task_id`` (with ``attempt_number``), ``pid``
  (with ``suffix`` out/err) or ``submission_id`` (a job's driver log, on the
  head unless ``node_id`` says otherwise): the last ``lines`` lines, then,
  when ``interval`` is given, what is appended, until the client hangs up.
  The body is plain text; with ``format=leading_1`` (Ray's default) each chunk
  starts with ``1``. A log that cannot be found is a JSON 400 here, where Ray
  sends a ``0``-led chunk.

What differs: ember filters at the source, before the limit, so ``total`` and
``num_filtered`` count the records that pass the filters (Ray's ``total``
counts the source's records before filtering); tasks are fetched up to
``limit + 1`` (the task store holds up to 100,000 attempts, and a dashboard
polls every few seconds), so for tasks these counts stop at ``limit + 1`` and
a warning says more match. Logs default to the head node when no node is
named.

Every query runs the public ``ember.util.state`` function on a thread
(``asyncio.to_thread``): those are blocking calls with their own short-lived
connections, and the server's event loop must keep serving meanwhile.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging

from aiohttp import web

from ..observability.errors import RayStateApiException
from ..observability.logs import LogFollower, remote_reader
from ..observability.schemas import DEFAULT_LIMIT, DEFAULT_RPC_TIMEOUT, PREDICATES
from ..util.state import api as state
from . import cluster_status
from .job_supervisor import log_file_name as job_log_file_name
from .metrics_history import MetricsHistory

logger = logging.getLogger(__name__)

#: Ray's RAY_MAX_LIMIT_FROM_API_SERVER default: the largest ``limit`` a list route takes.
MAX_LIMIT = 10_000
#: Ray's DEFAULT_LOG_LIMIT: lines of a log file sent before following it.
DEFAULT_LOG_LINES = 1000

#: resource in the URL -> the ember.util.state function listing it.
LISTINGS = {
    "actors": state.list_actors,
    "tasks": state.list_tasks,
    "nodes": state.list_nodes,
    "objects": state.list_objects,
    "workers": state.list_workers,
    "placement_groups": state.list_placement_groups,
    "jobs": state.list_jobs,
    "runtime_envs": state.list_runtime_envs,
}

SUMMARIES = {
    "tasks": state.summarize_tasks,
    "actors": state.summarize_actors,
    "objects": state.summarize_objects,
}


class BadParameter(ValueError):
    """A query parameter the route cannot use; its message names the parameter."""


# --- replies ----------------------------------------------------------------------------

def reply(result=None, message: str = "", status: int = 200) -> web.Response:
    """Ray's envelope: ``{"result": ok, "msg": message, "data": {"result": result}}``."""
    return web.json_response({"result": status < 400, "msg": message,
                              "data": {"result": result}}, status=status)


def _error_reply(exc: Exception) -> web.Response:
    """The HTTP answer to an exception of a state query."""
    if isinstance(exc, ValueError):  # BadParameter, or the state API's own checks
        return reply(message=str(exc), status=400)
    if isinstance(exc, (ConnectionError, RayStateApiException, TimeoutError)):
        return reply(message=f"The cluster did not answer the state query: {exc}", status=500)
    raise exc


# --- query parameters ----------------------------------------------------------------------

def _number(query, name: str, default, low, high=None, kind=int):
    """Parameter ``name`` as an int (or ``kind``) from low to high; default if absent."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise BadParameter(f"Invalid {name}={raw!r}: expected {expected}.") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadParameter(f"Invalid {name}={value}: expected {bounds}.")
    return value


def _bool(query, name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadParameter(f"Invalid {name}={raw!r}: expected true, false, 1 or 0.")


def filters_of(query) -> list[tuple[str, str, str]]:
    """Ray's three parallel filter parameters as ``[(key, predicate, value)]``."""
    keys = query.getall("filter_keys", [])
    predicates = query.getall("filter_predicates", [])
    values = query.getall("filter_values", [])
    if not len(keys) == len(predicates) == len(values):
        raise BadParameter(
            f"filter_keys, filter_predicates and filter_values must come in equal numbers "
            f"(got {len(keys)}, {len(predicates)} and {len(values)}).")
    for predicate in predicates:
        if predicate not in PREDICATES:
            raise BadParameter(f"Invalid filter_predicates={predicate!r}: expected one of "
                               f"{', '.join(PREDICATES)}.")
    return list(zip(keys, predicates, values))


@dataclasses.dataclass
class ListOptions:
    limit: int
    timeout: int
    detail: bool
    filters: list

    @classmethod
    def from_query(cls, query, resource: str) -> "ListOptions":
        filters = filters_of(query)
        if resource == "workers" and _bool(query, "exclude_driver", True):
            filters.append(("worker_type", "!=", "DRIVER"))
        return cls(limit=_number(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                   timeout=_number(query, "timeout", DEFAULT_RPC_TIMEOUT, 1),
                   detail=_bool(query, "detail", False), filters=filters)


def as_json(record, detail: bool) -> dict:
    """A record as Ray's JSON row: the detail-only columns left out unless ``detail``."""
    return {name: getattr(record, name) for name in record.list_columns(detail)}


# --- handlers -------------------------------------------------------------------------------

class StateRoutes:
    """The route handlers; they hold the GCS address of the dashboard's cluster."""

    def __init__(self, gcs_address: str):
        self.gcs_address = gcs_address

    async def list_resource(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        listing = LISTINGS.get(resource)
        if listing is None:
            return reply(message=f"Unknown resource {resource!r}; valid: "
                                 f"{', '.join(sorted(LISTINGS))}.", status=404)
        try:
            options = ListOptions.from_query(request.query, resource)
            # Tasks: one past the limit tells whether more match (see the module docstring).
            fetch = options.limit + 1 if resource == "tasks" else 0
            rows, warnings = await asyncio.to_thread(
                _list_partial, listing, self.gcs_address, options.filters, fetch,
                options.timeout, options.detail)
        except Exception as exc:  # noqa: BLE001 - _error_reply re-raises what it does not map
            return _error_reply(exc)
        if len(rows) > options.limit:
            warnings.append(f"More than {options.limit} {resource} match; {options.limit} are "
                            "shown. Pass a larger limit, or filters, to see others.")
        shown = rows[:options.limit]
        return reply({"total": len(rows), "num_after_truncation": len(shown),
                      "num_filtered": len(rows),
                      "result": [as_json(r, options.detail) for r in shown],
                      "partial_failure_warning": "\n".join(warnings), "warnings": warnings})

    async def summarize(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        try:
            timeout = _number(request.query, "timeout", DEFAULT_RPC_TIMEOUT, 1)
            summary = await asyncio.to_thread(SUMMARIES[resource], self.gcs_address, timeout,
                                              False)
        except Exception as exc:  # noqa: BLE001
            return _error_reply(exc)
        total = next(v for k, v in summary["cluster"].items() if k.startswith("total_"))
        return reply({"total": total, "num_after_truncation": total, "num_filtered": total,
                      "result": {"node_id_to_summary": summary},
                      "partial_failure_warning": "", "warnings": []})

    async def list_logs(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            timeout = _number(query, "timeout", DEFAULT_RPC_TIMEOUT, 1)
            files = await asyncio.to_thread(
                state.list_logs, self.gcs_address, query.get("node_id"), query.get("node_ip"),
                query.get("glob", "*"), timeout)
        except Exception as exc:  # noqa: BLE001
            return _error_reply(exc)
        return reply(files)

    async def stream_log(self, request: web.Request) -> web.StreamResponse:
        """A log file's last lines, then (with ``interval``) what is appended to it."""
        query = request.query
        try:
            output_format = query.get("format", "leading_1")
            if output_format not in ("leading_1", "text"):
                raise BadParameter(f"Invalid format={output_format!r}: expected leading_1 "
                                   "or text.")
            lines = _number(query, "lines", DEFAULT_LOG_LINES, -1)
            interval = _number(query, "interval", None, 0.05, 3600, float)  # seconds
            suffix = query.get("suffix", "out")
            if suffix not in ("out", "err"):
                raise BadParameter(f"Invalid suffix={suffix!r}: expected out or err.")
            pid = _number(query, "pid", 0, 1) or None
            filename = query.get("filename")
            if not filename and query.get("submission_id"):  # a job's driver log
                filename = job_log_file_name(query["submission_id"])
            timeout = _number(query, "timeout", DEFAULT_RPC_TIMEOUT, 1)
            node, name = await asyncio.to_thread(
                state.find_log_file, self.gcs_address, query.get("node_id"),
                query.get("node_ip"), filename, query.get("actor_id"),
                query.get("task_id"), pid, timeout, suffix,
                _number(query, "attempt_number", 0, 0))
            follower = LogFollower(remote_reader(node, name, timeout))
        except Exception as exc:  # noqa: BLE001
            return _error_reply(exc)
        lead = b"1" if output_format == "leading_1" else b""
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            # The tail is read before the headers go out: a client that acts once the
            # stream is open must find what follows in the stream, not in the tail.
            tail = await asyncio.to_thread(follower.last_lines, lines)
            await response.prepare(request)
            # aiohttp holds the headers back for the first chunk; an empty write sends
            # them, so a client following a quiet file sees its stream open now.
            await response.write(b"")
            await _write_lines(response, lead, tail)
            # aiohttp does not cancel a handler whose client hung up: without this
            # check, a stream of a quiet file would be followed forever.
            while interval is not None and not _gone(request):
                await asyncio.sleep(interval)
                await _write_lines(response, lead, await asyncio.to_thread(follower.poll))
        finally:
            follower.close()
        await response.write_eof()
        return response

    async def cluster_status(self, request: web.Request) -> web.Response:
        try:
            formatted = _bool(request.query, "format", False)
            data = await asyncio.to_thread(cluster_status.collect, self.gcs_address, formatted)
        except Exception as exc:  # noqa: BLE001
            return _error_reply(exc)
        return web.json_response({"result": True, "msg": "Got cluster status.", "data": data})


def _gone(request: web.Request) -> bool:
    """Whether the client of ``request`` has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _write_lines(response: web.StreamResponse, lead: bytes, lines: list[str]) -> None:
    if lines:
        await response.write(lead + "".join(line + "\n" for line in lines).encode())


def _list_partial(listing, address, filters, limit, timeout, detail) -> tuple[list, list]:
    """``(records, warnings)``: when some node does not answer (workers and objects
    ask every raylet), the rest with the failure as a warning, as Ray replies."""
    try:
        return listing(address, filters, limit, timeout, detail, True), []
    except RayStateApiException as exc:
        return listing(address, filters, limit, timeout, detail, False), [str(exc)]


# --- wiring -------------------------------------------------------------------------------------

def setup(app: web.Application) -> None:
    """Add the state routes, ``/api/cluster_status`` and ``/api/v0/metrics_history``
    (whose sampler runs while the app does) to the dashboard's app."""
    ctx = app["ctx"]
    routes = StateRoutes(ctx.gcs_address)
    history = MetricsHistory(ctx.gcs_address)
    app.router.add_get("/api/v0/logs", routes.list_logs)
    app.router.add_get("/api/v0/logs/{media_type:file|stream}", routes.stream_log)

    async def metrics_history(request: web.Request) -> web.Response:
        return reply(history.as_json())
    app.router.add_get("/api/v0/metrics_history", metrics_history)
    app.router.add_get("/api/v0/{resource:tasks|actors|objects}/summarize", routes.summarize)
    app.router.add_get("/api/v0/{resource}", routes.list_resource)
    app.router.add_get("/api/cluster_status", routes.cluster_status)
    app.on_startup.append(lambda app: history.start())
    app.on_cleanup.append(lambda app: history.stop())
