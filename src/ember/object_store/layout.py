"""How a value is laid out inside one store object, and the pickle-5 round trip.

A value becomes a main pickle stream plus out-of-band buffers (pickle protocol
5: numpy arrays, bytes-like payloads). Both go into one object::

    header   32 bytes     magic b"EMBO", version, buffer count, main offset and size
    table    16 bytes     (offset, size) of each buffer, relative to the object
             per buffer
    main     the pickle stream
    buffers  each starting at a multiple of 64 bytes

Why one object and not one per buffer: a single create/seal pair per value,
and a reader gets everything with one pin. Why 64-byte alignment: the arena
hands out 64-aligned offsets, so each buffer lands on a cache line, which is
what numpy and SIMD code expect of freshly allocated arrays.

The reader (:func:`read`) takes read-only views of the object and slices
them, never copies; :func:`load_from_store` then gives numpy arrays that are
read-only, zero-copy views of shared memory, as in Ray.
"""
from __future__ import annotations

import pickle
import struct

from ..exceptions import RaySystemError

MAGIC = b"EMBO"
VERSION = 1
BUFFER_ALIGNMENT = 64
_HEADER = struct.Struct("<4sHHIIQQ")  # magic, version, flags, num buffers, pad, main off, size
_ENTRY = struct.Struct("<QQ")


def _align(n: int) -> int:
    return (n + BUFFER_ALIGNMENT - 1) & ~(BUFFER_ALIGNMENT - 1)


def byte_views(buffers: list) -> list[memoryview]:
    """Flat, one-dimensional byte views of pickle-5 buffers (or any buffer objects)."""
    views = []
    for b in buffers:
        if isinstance(b, pickle.PickleBuffer):
            views.append(b.raw())  # C- or Fortran-contiguous; raises otherwise
        else:
            view = memoryview(b)
            views.append(view if view.format == "B" and view.ndim == 1 else view.cast("B"))
    return views


def plan(main_size: int, buffer_sizes: list[int]) -> tuple[int, int, list[int]]:
    """(total size, main offset, buffer offsets) of an object holding these parts."""
    main_offset = _HEADER.size + _ENTRY.size * len(buffer_sizes)
    end = main_offset + main_size
    offsets = []
    for size in buffer_sizes:
        start = _align(end)
        offsets.append(start)
        end = start + size
    return end, main_offset, offsets


def write(dest: memoryview, main, buffers: list[memoryview]) -> int:
    """Write ``main`` and ``buffers`` into ``dest`` (an object's whole range).

    Each part is copied with one slice assignment: a single ``memcpy``, with no
    intermediate join. Returns the bytes used.
    """
    total, main_offset, offsets = plan(len(main), [len(b) for b in buffers])
    _HEADER.pack_into(dest, 0, MAGIC, VERSION, 0, len(buffers), 0, main_offset, len(main))
    for i, (offset, buf) in enumerate(zip(offsets, buffers)):
        _ENTRY.pack_into(dest, _HEADER.size + i * _ENTRY.size, offset, len(buf))
    dest[main_offset:main_offset + len(main)] = main
    for offset, buf in zip(offsets, buffers):
        dest[offset:offset + len(buf)] = buf
    return total


def parse(view) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """((start, end) of main, [(start, end) of each buffer]) in an object's bytes."""
    if len(view) < _HEADER.size:
        raise RaySystemError(f"object store entry of {len(view)} bytes is too short to "
                             "hold a header; the store is corrupt")
    magic, version, _, count, _, main_offset, main_size = _HEADER.unpack_from(view, 0)
    if magic != MAGIC or version != VERSION:
        raise RaySystemError(f"object store entry has a bad header ({magic!r}, version "
                             f"{version}); the store is corrupt")
    ranges = [(main_offset, main_offset + main_size)]
    for i in range(count):
        offset, size = _ENTRY.unpack_from(view, _HEADER.size + i * _ENTRY.size)
        ranges.append((offset, offset + size))
    if any(end > len(view) for _, end in ranges):
        raise RaySystemError(f"object store entry of {len(view)} bytes has parts beyond "
                             "its end; the store is corrupt")
    return ranges[0], ranges[1:]


def read(view: memoryview) -> tuple[memoryview, list[memoryview]]:
    """(main, buffers): views into ``view``, an object written by :func:`write`."""
    (start, end), ranges = parse(view)
    return view[start:end], [view[a:b] for a, b in ranges]


def load_from_store(main, buffers: list):
    """The value of an object read from the store; arrays are read-only views into it."""
    return pickle.loads(main, buffers=buffers)
