"""How messages become bytes on a stream.

A stream carries frames. A frame is a 4-byte little-endian length followed by a
msgpack-encoded :class:`Envelope`. An envelope may announce raw buffers (pickle-5
out-of-band data, object chunks): they follow it as their own frames, each an
8-byte length and the bytes, so large payloads are never copied into the
msgpack stream or joined with each other.

Envelope kinds:

- REQUEST: expects exactly one REPLY or ERROR with the same ``rid``.
- REPLY / ERROR: answers a request.
- NOTIFY: one-way; ``rid`` is 0.
"""
from __future__ import annotations

import typing

import msgspec

from . import ALL_MESSAGES

REQUEST = 0
REPLY = 1
ERROR = 2
NOTIFY = 3

HEADER_SIZE = 4
BUFFER_HEADER_SIZE = 8
#: What the 4-byte header could announce; a connection accepts only up to
#: ``config.max_frame_bytes`` (see ember.rpc.connection).
MAX_FRAME = 2**32 - 1

AnyMessage = typing.Union[ALL_MESSAGES]  # type: ignore[valid-type]


class Envelope(msgspec.Struct, array_like=True, gc=False, omit_defaults=True):
    kind: int
    rid: int
    body: AnyMessage
    #: Lengths of the raw buffer frames that follow this envelope.
    buffers: list[int] = []


encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Envelope)
