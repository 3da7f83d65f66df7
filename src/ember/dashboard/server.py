"""The dashboard's aiohttp application: its context, its route modules and its auth.

Route modules: each of :data:`ROUTE_MODULES` exposes ``setup(app)`` and adds
its routes to the app; they read what they need from ``app["ctx"]`` (a
:class:`DashboardContext`). A module that does not exist (yet) is skipped, so
the Jobs API and the UI can be built and shipped apart.

Auth, safe by default. Every route of the dashboard can run code on the
cluster (a job's entrypoint is a shell command), so it is guarded like the
GCS port (``ember.rpc.auth``):

- bound to loopback (127.0.0.1 or ::1, the default), it is reachable from this
  machine only, where the cluster token is readable anyway: no token needed;
- bound to any other address, every request must carry the cluster token, as
  ``Authorization: Bearer <token>`` or a cookie ``ember_token`` (for a
  browser); otherwise 401 with a JSON ``{"message": ...}``.

``EMBER_AUTH_MODE=disabled`` turns the check off here too. Tokens are compared
in constant time (:func:`hmac.compare_digest`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import importlib
import ipaddress
import logging
import os
import signal
import socket
import warnings

from aiohttp import web

from .._version import __version__
from ..rpc import auth

logger = logging.getLogger(__name__)

#: Ray's Jobs API version (4: DELETE /api/jobs/{id} exists); Ray's clients check it.
API_VERSION = "4"
ROUTE_MODULES = ("ember.dashboard.jobs_routes", "ember.dashboard.state_routes",
                 "ember.dashboard.ui")
TOKEN_COOKIE = "ember_token"


@dataclasses.dataclass
class DashboardContext:
    """What every route module may know of the cluster (``app["ctx"]``)."""

    gcs_address: str   # "host:port" of the GCS, for ember.rpc clients
    session_dir: str   # the head's session directory (logs/, auth_token)
    node_ip: str       # the head node's IP
    host: str          # the address the dashboard listens on
    port: int          # the port it listens on

    @property
    def session_name(self) -> str:
        return os.path.basename(os.path.normpath(self.session_dir))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_app(ctx: DashboardContext) -> web.Application:
    """The dashboard's app: auth, ``/api/version`` and every route module that exists."""
    middlewares = [] if is_loopback(ctx.host) or not auth.enabled() else [
        token_middleware(auth.current_token())]
    app = web.Application(middlewares=middlewares)
    with warnings.catch_warnings():  # the route modules' contract is this string key
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["ctx"] = ctx
    app.router.add_get("/api/version", _version)
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            logger.info("dashboard: %s is not installed; its routes are not served", name)
            continue
        module.setup(app)
    return app


def token_middleware(token: bytes):
    """A middleware that answers 401 to a request without the cluster ``token``."""
    expected = token.decode()

    @web.middleware
    async def check_token(request: web.Request, handler):
        given = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):].strip()
        elif TOKEN_COOKIE in request.cookies:
            given = request.cookies[TOKEN_COOKIE]
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response(
                {"message": "This dashboard requires the cluster token: send it as "
                            "'Authorization: Bearer <token>' or a cookie 'ember_token' "
                            "(`ember get-auth-token` on the head prints it)."},
                status=401)
        return await handler(request)
    return check_token


async def _version(request: web.Request) -> web.Response:
    ctx: DashboardContext = request.app["ctx"]
    # Exactly Ray's four fields: Ray's client builds its VersionResponse from them.
    return web.json_response({"version": API_VERSION, "ray_version": __version__,
                              "ray_commit": "", "session_name": ctx.session_name})


async def serve(ctx: DashboardContext, listening_fd: int | None = None) -> None:
    """Serve the dashboard until SIGTERM (or the parent's death) ends the process.

    On ``listening_fd`` (a socket the head bound, ``node.listen_for_dashboard``)
    if given, else on ``ctx.host:ctx.port``.
    """
    app = make_app(ctx)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = (web.TCPSite(runner, ctx.host, ctx.port) if listening_fd is None else
            web.SockSite(runner, socket.socket(fileno=listening_fd)))
    try:
        await site.start()
    except OSError as exc:
        logger.error("dashboard: cannot listen on %s:%s: %s", ctx.host, ctx.port, exc)
        await runner.cleanup()
        raise SystemExit(1) from None
    logger.info("dashboard listening on http://%s:%s", ctx.host, ctx.port)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
