"""The dashboard: one aiohttp process on the head node, serving the Jobs REST API,
the state API over HTTP and the web UI on port 8265, as Ray's dashboard does.

Why a process of its own: the GCS and the raylet run the cluster's hot paths
on their event loops; HTTP parsing, log tailing and the job supervisor's
bookkeeping must not delay them, and a crash here must not take them down.
The dashboard is a client of the GCS like any driver (``ember.rpc``), so it
survives a GCS restart with Redis storage the way a driver does.

Who starts it: the head (``ember.node.start_head``), unless
``include_dashboard=False``. The head binds the port up front (8265, else
the next free one) and writes the URL to ``<session_dir>/dashboard_url``, so
``ember.init()`` returns without waiting for the dashboard. ``ember start
--head`` starts the process at once; ``init()`` at the first connection to
the port (``on_demand.py``), since most local clusters never open it.

Layout:

- ``server.py``: :func:`~.server.make_app`, the auth middleware, ``/api/version``;
- ``on_demand.py``: starting the process at the first connection;
- ``__main__.py``: ``python -m ember.dashboard``;
- ``jobs_routes.py``, ``job_manager.py``, ``job_supervisor.py``: the Jobs API;
- ``state_routes.py``, ``ui.py``, ``static/``: the state API over HTTP and the UI.
"""
from __future__ import annotations

import os

from ..ports import DEFAULT_DASHBOARD_PORT

#: Ray's default dashboard port.
DEFAULT_PORT = DEFAULT_DASHBOARD_PORT
#: In the head's session directory: the dashboard's URL, e.g. ``http://127.0.0.1:8265``.
URL_FILE = "dashboard_url"


def read_url(session_dir: str) -> str | None:
    """The URL of the dashboard of the session at ``session_dir``, or None if it has none."""
    try:
        with open(os.path.join(session_dir, URL_FILE)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None
