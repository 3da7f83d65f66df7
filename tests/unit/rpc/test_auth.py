"""The connection handshake (ember.rpc.auth) and frame limits, on an in-process server.

Each test runs a real server and real sockets on one event loop; attackers
are plain sockets that speak bytes, as they would.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct

import pytest
import uvloop

from ember import rpc
from ember.config import config
from ember.protocol.gcs import KVGet, KVGetReply
from ember.rpc import auth, connection

TOKEN = "unit-test-token-" + "a" * 48


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.delenv(auth.ENV_MODE, raising=False)
    monkeypatch.setattr(auth, "_token", None)
    auth.set_token(TOKEN)
    yield


@pytest.fixture
def rpc_log(caplog):
    """caplog for ember.rpc, which a driver's ember logger does not propagate to root."""
    logger = logging.getLogger("ember.rpc")
    logger.addHandler(caplog.handler)
    propagate, logger.propagate = logger.propagate, False  # each record once
    with caplog.at_level(logging.DEBUG, logger="ember.rpc"):
        yield caplog
    logger.propagate = propagate
    logger.removeHandler(caplog.handler)


def run(coro):
    return uvloop.run(coro)


async def start_server():
    server = await rpc.serve("127.0.0.1:0", lambda: {KVGet: lambda c, r: KVGetReply(b"v")},
                             name="test-server")
    return server, server.sockets[0].getsockname()[1]



async def exchange(port: int, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send ``data`` on a raw socket; everything the server sends back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def test_a_client_with_the_token_is_served():
    async def main():
        server, port = await start_server()
        conn = await rpc.connect(f"127.0.0.1:{port}")
        assert await conn.call(KVGet("n", b"k")) == KVGetReply(b"v")
        conn.close()
        server.close()
    run(main())


def test_wrong_token_is_refused_before_any_request_is_read(rpc_log):
    async def main():
        server, port = await start_server()
        frame = b"\x10\x00\x00\x00" + b"x" * 16
        answer = await exchange(port, auth.client_preamble(b"wrong") + frame)
        server.close()
        return answer
    answer = run(main())
    assert answer == b"EMBR" + bytes([auth.Refusal.WRONG_TOKEN])
    refused = [r.getMessage() for r in rpc_log.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "127.0.0.1:" in refused[0] and "wrong cluster token" in refused[0]


def test_a_client_with_another_token_gets_a_clear_error(monkeypatch):
    async def main():
        server, port = await start_server()
        auth.set_token("some-other-cluster")
        try:
            with pytest.raises(rpc.AuthenticationError, match="EMBER_AUTH_TOKEN"):
                await rpc.connect(f"127.0.0.1:{port}", name="gcs")
        finally:
            server.close()
    run(main())


def test_plain_frames_without_a_handshake_are_refused():
    async def main():
        server, port = await start_server()
        answer = await exchange(port, b"\x11\x00\x00\x00" + b"\x94" * 17)
        server.close()
        return answer
    assert run(main()) == b"EMBR" + bytes([auth.Refusal.BAD_HANDSHAKE])


def test_an_empty_token_is_refused_unless_auth_is_disabled(monkeypatch):
    async def main():
        server, port = await start_server()
        refused = await exchange(port, auth.client_preamble(b""))
        monkeypatch.setenv(auth.ENV_MODE, "disabled")
        accepted_reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(auth.client_preamble(b""))
        accepted = await accepted_reader.readexactly(5)
        writer.close()
        server.close()
        return refused, accepted
    refused, accepted = run(main())
    assert refused == b"EMBR" + bytes([auth.Refusal.NO_TOKEN])
    assert accepted == b"EMBR" + bytes([auth.Refusal.ACCEPTED])


def test_a_silent_connection_is_closed_after_the_handshake_timeout(monkeypatch):
    monkeypatch.setattr(config, "handshake_timeout_s", 0.2)

    async def main():
        server, port = await start_server()
        answer = await exchange(port, b"")  # connects, says nothing, waits for EOF
        server.close()
        return answer
    assert run(main()) == b"EMBR" + bytes([auth.Refusal.BAD_HANDSHAKE])


def test_connections_beyond_the_unauthenticated_cap_are_refused(monkeypatch):
    monkeypatch.setattr(config, "max_unauthenticated_connections", 2)

    async def main():
        server, port = await start_server()
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        busy = await exchange(port, b"")
        for _, writer in silent:
            writer.close()
        server.close()
        return busy
    assert run(main()) == b"EMBR" + bytes([auth.Refusal.BUSY])


def test_an_oversized_frame_is_refused_from_its_header(monkeypatch, rpc_log):
    monkeypatch.setattr(connection, "_MAX_FRAME", 1024)

    async def main():
        server, port = await start_server()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(auth.client_preamble(TOKEN.encode()) + struct.pack("<I", 2**31) + b"\0" * 4096)
        accepted = await reader.readexactly(5)
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.close()
        return accepted, rest
    accepted, rest = run(main())
    assert accepted == b"EMBR\x00" and rest == b""  # closed, nothing answered
    lines = [r.getMessage() for r in rpc_log.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and f"announcing {2**31} bytes" in lines[0]
    assert not any(r.exc_info for r in rpc_log.records)


def test_a_frame_that_is_not_a_message_closes_the_connection_with_one_line(rpc_log):
    async def main():
        server, port = await start_server()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(auth.client_preamble(TOKEN.encode()) + struct.pack("<I", 8) + b"\xc1" * 8)
        await reader.readexactly(5)
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # The server still serves others.
        conn = await rpc.connect(f"127.0.0.1:{port}")
        reply = await conn.call(KVGet("n", b"k"))
        conn.close()
        server.close()
        return rest, reply
    rest, reply = run(main())
    assert rest == b"" and reply == KVGetReply(b"v")
    warnings = [r.getMessage() for r in rpc_log.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not an ember message" in warnings[0]


def test_a_message_over_the_frame_limit_is_not_sent(monkeypatch):
    monkeypatch.setattr(connection, "_MAX_FRAME", 1024)

    async def main():
        server, port = await start_server()
        conn = await rpc.connect(f"127.0.0.1:{port}")
        with pytest.raises(connection.FrameTooLarge, match="EMBER_MAX_FRAME_BYTES"):
            conn.request(KVGet("n", b"k" * 4096))
        assert await conn.call(KVGet("n", b"k")) == KVGetReply(b"v")  # still usable
        conn.close()
        server.close()
    run(main())


def test_the_session_token_file_is_private(tmp_path):
    path = auth.write_token_file(str(tmp_path), "secret")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert auth.read_token_file(path) == "secret"
    assert auth.child_env(str(tmp_path), {auth.ENV_TOKEN: "x", "A": "1"}) == {
        "A": "1", auth.ENV_TOKEN_FILE: path}


def test_lease_grants_are_bound_to_the_worker_key_and_lease():
    key = os.urandom(32)
    grant = auth.lease_grant(key, b"lease-1")
    assert auth.grant_is_valid(key, b"lease-1", grant)
    assert not auth.grant_is_valid(key, b"lease-2", grant)
    assert not auth.grant_is_valid(os.urandom(32), b"lease-1", grant)
    assert not auth.grant_is_valid(b"", b"lease-1", auth.lease_grant(b"", b"lease-1"))


def test_a_unix_socket_peer_is_named_by_its_pid(tmp_path, rpc_log):
    path = str(tmp_path / "server.sock")

    async def main():
        server = await rpc.serve("unix:" + path, lambda: {}, name="unix-server")
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(auth.client_preamble(b"wrong"))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.close()
        return answer
    assert run(main()) == b"EMBR" + bytes([auth.Refusal.WRONG_TOKEN])
    refused = [r.getMessage() for r in rpc_log.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and f"pid {os.getpid()} (" in refused[0]
