"""The dashboard's app in-process: what it serves before, or without, a GCS."""
from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from ember.dashboard import job_manager
from ember.dashboard.server import DashboardContext, is_loopback, make_app
from ember.node import free_port


def test_loopback_hosts():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "::", "example.com"]))


def test_serves_at_once_and_answers_503_while_the_gcs_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(job_manager, "FIRST_CONNECT_WAIT_S", 0.5)
    ctx = DashboardContext(gcs_address=f"127.0.0.1:{free_port()}",
                           session_dir=str(tmp_path / "session_x"), node_ip="127.0.0.1",
                           host="127.0.0.1", port=8265)

    async def scenario():
        async with TestClient(TestServer(make_app(ctx))) as client:
            version = await (await client.get("/api/version")).json()
            assert version["version"] == "4" and version["session_name"] == "session_x"
            jobs = await client.get("/api/jobs/")
            assert jobs.status == 503
            assert "has not reached the GCS at 127.0.0.1:" in await jobs.text()
            assert (await client.get("/api/no-such-route")).status == 404
    asyncio.run(scenario())
