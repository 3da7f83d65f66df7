#!/usr/bin/env python3
"""ember's call rates as a fraction of the machine's limit: a raw IPC round trip.

    python benchmarks/round_trip_limit.py [--seconds 3]

The limit is measured in the same run: two processes on uvloop, over a Unix
socket, one writing small length-prefixed msgpack frames shaped like ember's
(``[kind, request id, message type, body]``) and the other decoding each and
answering. "sync" sends one frame and waits for its answer; "pipelined" keeps
1,000 in flight. A synchronous ember call needs at least one such round trip
(caller -> worker -> caller) plus running the function, so the sync rows are
compared with the sync round trip and the async rows with the pipelined
stream. Each figure is the best of three runs of ``--seconds``.
"""
from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import tempfile
import time

import msgspec
import uvloop

SECONDS = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 3.0
_HEADER = struct.Struct("<I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class _Framed(asyncio.Protocol):
    """Length-prefixed msgpack frames; ``on_frame(self, frame)`` for each one in."""

    def __init__(self, on_frame):
        self.on_frame = on_frame
        self.buf = bytearray()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _HEADER.unpack_from(buf, pos)
            if len(buf) - pos - 4 < n:
                break
            self.on_frame(self, _decoder.decode(memoryview(buf)[pos + 4:pos + 4 + n]))
            pos += 4 + n
        del buf[:pos]

    def send(self, frame):
        body = _encoder.encode(frame)
        self.transport.write(_HEADER.pack(len(body)) + body)


def _serve(path: str) -> None:
    """The answering process: decode each request, reply with a small result."""
    async def main():
        def answer(proto, frame):
            kind, rid, _, body = frame
            proto.send([1, rid, "PushTaskReply", [[b"\x01" * 28, [0, b"ok"]], False]])
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Framed(answer), path)
        await server.serve_forever()
    uvloop.run(main())


def _raw(path: str, window: int) -> float:
    """Round trips per second with ``window`` requests in flight."""
    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        state = {"sent": 0, "got": 0, "stop": loop.time() + SECONDS}
        request = [0, 0, "PushTask", [b"\x02" * 24, b"\x03" * 28, "module.function", [],
                                      [], 1, [b"\x04" * 28, "127.0.0.1", 1234]]]

        def send(proto):
            state["sent"] += 1
            request[1] = state["sent"]
            proto.send(request)

        def got(proto, frame):
            state["got"] += 1
            if loop.time() >= state["stop"]:
                if state["got"] == state["sent"] and not done.done():
                    done.set_result(None)
                return
            send(proto)
        _, proto = await loop.create_unix_connection(lambda: _Framed(got), path)
        began = loop.time()
        for _ in range(window):
            send(proto)
        await done
        rate = state["got"] / (loop.time() - began)
        proto.transport.close()
        return rate
    return uvloop.run(main())


def raw_limits() -> dict[str, float]:
    path = os.path.join(tempfile.mkdtemp(prefix="ember-rtt-"), "s")
    pid = os.fork()
    if pid == 0:
        try:
            _serve(path)
        finally:
            os._exit(0)
    try:
        while not os.path.exists(path):
            time.sleep(0.01)
        return {"sync": max(_raw(path, 1) for _ in range(3)),
                "pipelined": max(_raw(path, 1000) for _ in range(3))}
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


def ember_rates() -> dict[str, float]:
    import ember

    ember.init(num_cpus=2)

    @ember.remote
    def small_value():
        return b"ok"

    @ember.remote
    class Actor:
        def small_value(self):
            return b"ok"

    @ember.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

    actor, async_actor = Actor.remote(), AsyncActor.remote()
    ember.get([actor.small_value.remote(), async_actor.small_value.remote()])

    def rate(step, per_step: int = 1) -> float:
        best = 0.0
        for _ in range(3):
            n, began = 0, time.perf_counter()
            while time.perf_counter() - began < SECONDS:
                step()
                n += per_step
            best = max(best, n / (time.perf_counter() - began))
        return best

    out = {
        "tasks sync": rate(lambda: ember.get(small_value.remote())),
        "1:1 actor calls sync": rate(lambda: ember.get(actor.small_value.remote())),
        "1:1 async-actor calls sync": rate(lambda: ember.get(async_actor.small_value.remote())),
        "tasks async": rate(lambda: ember.get([small_value.remote() for _ in range(1000)]),
                            1000),
        "1:1 actor calls async": rate(
            lambda: ember.get([actor.small_value.remote() for _ in range(1000)]), 1000),
    }
    ember.shutdown()
    return out


def main() -> None:
    limits = raw_limits()
    rates = ember_rates()
    print(f"raw uvloop+msgspec round trip over a Unix socket: {limits['sync']:,.0f}/s sync, "
          f"{limits['pipelined']:,.0f}/s pipelined (1,000 in flight)\n")
    print("| workload | ember calls/s | fraction of the raw limit |")
    print("|---|---|---|")
    for name, value in rates.items():
        limit = limits["sync" if name.endswith("sync") else "pipelined"]
        print(f"| {name} | {value:,.0f} | {value / limit:.0%} |")


if __name__ == "__main__":
    main()
