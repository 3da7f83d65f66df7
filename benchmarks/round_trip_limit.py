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

A third limit shows what the threads cost: the same sync round trip with
ember's thread layout and nothing else of ember. The caller hands the request
to a loop thread and blocks; the answering process's loop thread hands it to
its main thread, which hands the reply back to its loop. That is four thread
hand-offs per call, as an ember call makes (driver -> its I/O thread,
worker's I/O thread -> executor, and back), each a wake-up of a sleeping
thread and a pass of the GIL.
"""
from __future__ import annotations

import asyncio
import os
import queue
import socket
import struct
import sys
import tempfile
import threading
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


_REPLY_BODY = [[b"\x01" * 28, [0, b"ok"]], False]


def _serve(path: str, threaded: bool) -> None:
    """The answering process: decode each request, reply with a small result.

    ``threaded``: as an ember worker does, the loop thread hands each request
    to the main thread (a SimpleQueue), which "runs" it and hands the reply back
    to the loop (call_soon_threadsafe) to send.
    """
    loop = uvloop.new_event_loop()
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def answer(proto, frame):
        kind, rid, _, body = frame
        if threaded:
            inbox.put((proto, rid))
        else:
            proto.send([1, rid, "PushTaskReply", _REPLY_BODY])

    async def main():
        server = await loop.create_unix_server(lambda: _Framed(answer), path)
        await server.serve_forever()

    if not threaded:
        loop.run_until_complete(main())
        return
    threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True).start()
    while True:
        proto, rid = inbox.get()
        loop.call_soon_threadsafe(proto.send, [1, rid, "PushTaskReply", _REPLY_BODY])


#: A PushTask-shaped request frame: [kind, request id, message type, body].
_REQUEST = [0, 0, "PushTask", [b"\x02" * 24, b"\x03" * 28, "module.function", [], [], 1,
                               [b"\x04" * 28, "127.0.0.1", 1234]]]


def _raw(path: str, window: int) -> float:
    """Round trips per second with ``window`` requests in flight."""
    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        state = {"sent": 0, "got": 0, "stop": loop.time() + SECONDS}
        request = list(_REQUEST)

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


def _threaded_caller(path: str) -> float:
    """Sync round trips per second with an ember driver's threads: the caller hands
    each request to a loop thread (call_soon_threadsafe) and blocks on a lock that
    the loop thread releases when the reply arrives."""
    loop = uvloop.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    waiting: dict[int, threading.Lock] = {}

    def got(proto, frame):
        waiting.pop(frame[1]).release()

    proto = asyncio.run_coroutine_threadsafe(_connect(path, got), loop).result()[1]
    request = list(_REQUEST)
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < SECONDS:
        n += 1
        lock = threading.Lock()
        lock.acquire()
        waiting[n] = lock
        request[1] = n
        loop.call_soon_threadsafe(proto.send, list(request))
        lock.acquire()
    rate = n / (time.perf_counter() - began)
    loop.call_soon_threadsafe(proto.transport.close)
    loop.call_soon_threadsafe(loop.stop)
    return rate


async def _connect(path, on_frame):
    return await asyncio.get_running_loop().create_unix_connection(
        lambda: _Framed(on_frame), path)


def _with_server(threaded: bool, measure) -> float:
    path = os.path.join(tempfile.mkdtemp(prefix="ember-rtt-"), "s")
    pid = os.fork()
    if pid == 0:
        try:
            _serve(path, threaded)
        finally:
            os._exit(0)
    try:
        while not os.path.exists(path):
            time.sleep(0.01)
        return max(measure(path) for _ in range(3))
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


def raw_limits() -> dict[str, float]:
    return {"sync": _with_server(False, lambda path: _raw(path, 1)),
            "pipelined": _with_server(False, lambda path: _raw(path, 1000)),
            "threaded": _with_server(True, _threaded_caller)}


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
          f"{limits['pipelined']:,.0f}/s pipelined (1,000 in flight); sync with ember's "
          f"four thread hand-offs: {limits['threaded']:,.0f}/s\n")
    print("| workload | ember calls/s | fraction of the raw limit | "
          "fraction of the four-hand-off round trip |")
    print("|---|---|---|---|")
    for name, value in rates.items():
        sync = name.endswith(" sync")
        limit = limits["sync" if sync else "pipelined"]
        threaded = f"{value / limits['threaded']:.0%}" if sync else "-"
        print(f"| {name} | {value:,.0f} | {value / limit:.0%} | {threaded} |")


if __name__ == "__main__":
    main()
