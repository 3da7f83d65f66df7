"""Spill files: one primary copy of one object, on local disk, verifiable.

When the store is full it writes unpinned primary copies to
``<session_dir>/spill/`` and frees their memory; a later read restores them.
Objects in the store are large (small values travel inline), so one file per
object is simple and costs little; Ray fuses small objects into shared files
only because its store also holds small ones.

File format (little-endian)::

    magic       8 bytes   b"EMBSPIL1"
    id_length   u32       length of the object id
    reserved    u32       0
    size        u64       bytes of object data
    crc32       u32       zlib.crc32 of the data
    reserved    u32       0
    object id   id_length bytes
    data        size bytes

A file can be wrong in several ways: truncated (disk filled up, raylet killed
mid-write, someone copied it), garbled, swapped with another object's file, or
deleted. Restoring checks the magic, the id, the size, the exact file length
and the CRC of the bytes it read, and every failure raises
:class:`SpilledObjectCorruptError` naming the file. A reader never hangs and
never sees garbage.

These functions do blocking disk I/O: the store calls them on its I/O thread,
never on the event loop. ``zlib.crc32`` and ``os.write``/``readinto`` release
the GIL for large buffers, so the raylet's loop keeps running meanwhile.
"""
from __future__ import annotations

import errno
import mmap
import os
import shutil
import struct
import zlib

from ..exceptions import ObjectLostError

MAGIC = b"EMBSPIL1"
_HEADER = struct.Struct("<8sIIQII")
#: Bytes per write/read call: big enough to be efficient, small enough to interleave.
_CHUNK = 64 * 1024 * 1024


class SpilledObjectCorruptError(ObjectLostError):
    """The spill file of an object is missing, truncated or corrupt: the value is lost."""

    def __init__(self, object_ref_hex="", owner_address=None, call_site="", message=None,
                 *, path: str = "", reason: str = ""):
        if message is None:
            message = (f"Object {object_ref_hex} was spilled to disk, but its spill file "
                       f"{path} is {reason}, so the value is lost. Spill files live in "
                       "<session_dir>/spill/ and must not be moved or edited while the "
                       "cluster runs; check that the disk is healthy and not full. "
                       "Re-create the object (re-run the task or put() that made it).")
        super().__init__(object_ref_hex, owner_address, call_site, message)
        self.path = path


def spill_path(spill_dir: str, prefix: str, object_id: bytes, sequence: int) -> str:
    """A unique file name: a re-created object never collides with a stale file."""
    return os.path.join(spill_dir, f"{prefix}-{object_id.hex()}-{sequence}")


def write(path: str, object_id: bytes, data: memoryview) -> None:
    """Write ``data`` to ``path`` in the spill format; the file is removed on failure."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    crc = 0
    for start in range(0, len(data), _CHUNK):
        crc = zlib.crc32(data[start:start + _CHUNK], crc)
    header = _HEADER.pack(MAGIC, len(object_id), 0, len(data), crc, 0) + object_id
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, header)
        for start in range(0, len(data), _CHUNK):
            _write_all(fd, data[start:start + _CHUNK])
    except BaseException:
        os.close(fd)
        remove(path)
        raise
    os.close(fd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_into(path: str, object_id: bytes, out: memoryview) -> None:
    """Fill ``out`` (exactly the object's size) from ``path``, verifying everything."""
    oid = object_id.hex()

    def corrupt(reason):
        return SpilledObjectCorruptError(oid, path=path, reason=reason)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise corrupt("missing") from None
    except OSError as exc:
        raise corrupt(f"unreadable ({exc})") from exc
    try:
        head = os.read(fd, _HEADER.size)
        if len(head) < _HEADER.size:
            raise corrupt(f"truncated ({len(head)} bytes, shorter than its header)")
        magic, id_length, _, size, crc, _ = _HEADER.unpack(head)
        if magic != MAGIC:
            raise corrupt(f"not a spill file (bad magic {magic!r})")
        stored_id = os.read(fd, id_length)
        if stored_id != object_id:
            raise corrupt(f"the spill file of another object ({stored_id.hex()})")
        if size != len(out):
            raise corrupt(f"for {size} bytes of data, but the object has {len(out)}")
        expected_length = _HEADER.size + id_length + size
        actual_length = os.fstat(fd).st_size
        if actual_length != expected_length:
            raise corrupt(f"truncated or padded ({actual_length} bytes, expected "
                          f"{expected_length})")
        with open(fd, "rb", buffering=0, closefd=False) as f:
            got = 0
            while got < size:
                n = f.readinto(out[got:got + _CHUNK])
                if not n:
                    raise corrupt(f"truncated while reading ({got} of {size} data bytes)")
                got += n
        actual_crc = 0
        for start in range(0, size, _CHUNK):
            actual_crc = zlib.crc32(out[start:start + _CHUNK], actual_crc)
        if actual_crc != crc:
            raise corrupt(f"corrupt (CRC32 of the data is {actual_crc:#010x}, the header "
                          f"says {crc:#010x})")
    except OSError as exc:
        raise corrupt(f"unreadable ({exc})") from exc
    finally:
        os.close(fd)


def create_sparse(path: str, size: int):
    """A new file of ``size`` bytes (no blocks yet), mapped read-write; the file is
    removed if that fails. Raises OSError, ENOSPC when the disk has no room for it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if shutil.disk_usage(os.path.dirname(path)).free < size:
        raise OSError(errno.ENOSPC, f"{size} bytes do not fit in the free space on its disk")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size) if size else None
    except BaseException:
        remove(path)
        raise
    finally:
        os.close(fd)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_all(spill_dir: str, prefix: str = "") -> None:
    """Remove the spill files in ``spill_dir`` whose names start with ``prefix``
    (all of them by default), and the directory itself once it is empty."""
    try:
        names = os.listdir(spill_dir)
    except OSError:  # never made, or not a directory: nothing of ours is there
        return
    for name in names:
        if name.startswith(prefix):
            remove(os.path.join(spill_dir, name))
    try:
        os.rmdir(spill_dir)
    except OSError:
        pass  # another store of the session still spills here, or it is gone
