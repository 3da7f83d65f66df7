"""The web UI: one HTML page and its static files, served as they are in the package.

There is no build step, on purpose: ember installs with pip anywhere, and a
Node toolchain in the install (or a bundle nobody can read in a review) would
undo that. The page is plain HTML, CSS and ES modules under ``static/``; the
browser loads the modules itself. It reads only the dashboard's JSON routes
(the state API, ``/api/cluster_status``, ``/api/v0/metrics_history`` and the
Jobs API) and polls them every two seconds, so it holds no state a reload
would lose beyond the URL's ``#/page?params``.

Every value from the cluster reaches the page through ``textContent`` or an
attribute set from script (``static/js/dom.js``), never through ``innerHTML``:
actor names, log lines and entrypoints are user input.
"""
from __future__ import annotations

import os

from aiohttp import web

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: The page itself must not be cached: a new ember's modules come with a new page.
_NO_CACHE = {"Cache-Control": "no-cache"}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(os.path.join(STATIC_DIR, "index.html"), headers=_NO_CACHE)


async def favicon(request: web.Request) -> web.FileResponse:
    return web.FileResponse(os.path.join(STATIC_DIR, "favicon.svg"),
                            headers={"Content-Type": "image/svg+xml"})


def setup(app: web.Application) -> None:
    """Serve ``/`` (the page) and ``/static/...`` (its modules, styles and icon)."""
    app.router.add_get("/", index)
    app.router.add_get("/index.html", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
