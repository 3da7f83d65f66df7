"""The Jobs REST API on the dashboard, with Ray's routes and JSON shapes.

    POST   /api/jobs/                     submit: {"submission_id", "job_id"}
    GET    /api/jobs/                     list: [JobDetails, ...]
    GET    /api/jobs/{id}                 JobDetails
    GET    /api/jobs/{id}/logs            {"logs": "..."}
    GET    /api/jobs/{id}/logs/tail       websocket: the log as it grows, text frames
    POST   /api/jobs/{id}/stop            {"stopped": bool}
    DELETE /api/jobs/{id}                 {"deleted": bool}
    PUT    /api/packages/{protocol}/{name}  upload a runtime_env package (body: the zip)
    GET    /api/packages/{protocol}/{name}  200 if it exists, else 404

Errors are Ray's: a status (400 bad input, 404 unknown job, 503 the GCS does
not answer, 500 our fault)
and a plain-text body that says what was wrong, which Ray's client and ours
show as they are. No error stops the dashboard: each handler turns every
failure into a response.

Package names: ember's package URIs are ``gcs://<kind>/<hash>``
(``ember.runtime_env``), so ``{name}`` is ``<kind>/<hash>``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os

from aiohttp import web

from ..job_submission.models import BadRequest, JobDetails, JobSubmitRequest
from .job_manager import JobManager, NotFound

logger = logging.getLogger(__name__)

#: How often a tailing websocket looks for new output.
TAIL_INTERVAL_S = 0.2
_MANAGER = web.AppKey("job_manager", JobManager)


def setup(app: web.Application) -> None:
    ctx = app["ctx"]
    app[_MANAGER] = JobManager(ctx.gcs_address, ctx.session_dir)
    app.on_startup.append(_start)
    app.on_cleanup.append(_close)
    app.router.add_post("/api/jobs/", submit_job)
    app.router.add_get("/api/jobs/", list_jobs)
    app.router.add_get("/api/jobs/{submission_id}", get_job)
    app.router.add_get("/api/jobs/{submission_id}/logs", get_job_logs)
    app.router.add_get("/api/jobs/{submission_id}/logs/tail", tail_job_logs)
    app.router.add_post("/api/jobs/{submission_id}/stop", stop_job)
    app.router.add_delete("/api/jobs/{submission_id}", delete_job)
    app.router.add_put("/api/packages/{protocol}/{package_name:.+}", upload_package)
    app.router.add_get("/api/packages/{protocol}/{package_name:.+}", get_package)


async def _start(app: web.Application) -> None:
    await app[_MANAGER].start()


async def _close(app: web.Application) -> None:
    await app[_MANAGER].close()


def _errors(handler):
    """Turn a handler's failures into Ray's error responses (plain text, 4xx or 500)."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return web.Response(status=400, text=str(exc))
        except NotFound as exc:
            return web.Response(status=404, text=str(exc))
        except (asyncio.TimeoutError, ConnectionError) as exc:
            return web.Response(status=503, text=(
                f"The cluster's GCS did not answer ({type(exc).__name__}: {exc}); is the "
                "cluster up? Try again once it is."))
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - the dashboard must stay up
            logger.exception("%s %s failed", request.method, request.path)
            return web.Response(status=500, text=f"{type(exc).__name__}: {exc}")
    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _manager(request: web.Request) -> JobManager:
    return request.app[_MANAGER]


def _json(payload) -> web.Response:
    return web.json_response(payload)


@_errors
async def submit_job(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The request body is not JSON: {exc}.") from None
    submission_id = await _manager(request).submit(JobSubmitRequest.parse(body))
    return _json({"job_id": submission_id, "submission_id": submission_id})


@_errors
async def list_jobs(request: web.Request) -> web.Response:
    return _json([job.to_json() for job in await _manager(request).list()])


@_errors
async def get_job(request: web.Request) -> web.Response:
    job = await _manager(request).get_with_driver(request.match_info["submission_id"])
    return _json(job.to_json())


@_errors
async def stop_job(request: web.Request) -> web.Response:
    return _json({"stopped": await _manager(request).stop(request.match_info["submission_id"])})


@_errors
async def delete_job(request: web.Request) -> web.Response:
    deleted = await _manager(request).delete(request.match_info["submission_id"])
    return _json({"deleted": deleted})


@_errors
async def get_job_logs(request: web.Request) -> web.Response:
    manager = _manager(request)
    job = await manager.get(request.match_info["submission_id"])
    data = await _read_log(manager, job, 0)
    return _json({"logs": data.decode(errors="replace")})


@_errors
async def tail_job_logs(request: web.Request) -> web.StreamResponse:
    """Send the log from its start, then what is appended, until the job has ended."""
    manager = _manager(request)
    submission_id = request.match_info["submission_id"]
    await manager.get(submission_id)  # 404 before the upgrade for an unknown job
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    offset = 0
    closed = asyncio.ensure_future(ws.receive())  # a close from the client ends the tail
    try:
        while not closed.done():
            job = await manager.get(submission_id)
            ended = job.status.is_terminal()  # read before the log: nothing is missed
            data = await _read_log(manager, job, offset)
            if data:
                offset += len(data)
                await ws.send_str(data.decode(errors="replace"))
            elif ended:
                break
            else:
                await asyncio.wait([closed], timeout=TAIL_INTERVAL_S)
    except (NotFound, ConnectionResetError):
        pass  # deleted while tailed, or the client went away
    finally:
        closed.cancel()
        await ws.close()
    return ws


async def _read_log(manager: JobManager, job: JobDetails, offset: int) -> bytes:
    """The job's log from byte ``offset``: the file if it is on this machine's head
    node, else through the state API from the job's node."""
    path = manager.log_path(job.submission_id)
    if os.path.exists(path) or not job.driver_node_id:
        return await asyncio.get_running_loop().run_in_executor(None, _read_file, path, offset)
    return (await manager.remote_log(job))[offset:]


def _read_file(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


@_errors
async def upload_package(request: web.Request) -> web.Response:
    uri = _package_uri(request)
    try:
        await _manager(request).upload_package(uri, await request.read())
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return web.Response(status=200)


@_errors
async def get_package(request: web.Request) -> web.Response:
    try:
        exists = await _manager(request).package_exists(_package_uri(request))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if not exists:
        raise NotFound(f"Package {_package_uri(request)} does not exist.")
    return web.Response(status=200)


def _package_uri(request: web.Request) -> str:
    return f"{request.match_info['protocol']}://{request.match_info['package_name']}"
