"""The node's shared memory: one memfd, created by the raylet, mapped by its clients.

Facts that shape this module:

- ``memfd_create`` makes an anonymous shared-memory file. It has no name in
  ``/dev/shm``, so nothing can leak there: the memory goes back to the kernel
  when the last process holding the fd or a mapping exits, even after
  SIGKILL. (POSIX ``shm_open`` segments, which Ray's plasma uses, outlive a
  crashed store.)
- ``ftruncate`` to the capacity reserves nothing. The kernel allocates a page
  the first time anyone touches it, so an idle store costs no memory.
- A process on the same node (and user) can open another process's fd through
  ``/proc/<pid>/fd/<n>``; that yields a new open file description of the same
  memfd. Clients do that once, instead of receiving the fd over the socket
  with ``SCM_RIGHTS``, which asyncio's transports do not expose.
- The memfd is sealed against shrinking and growing (``F_SEAL_SHRINK`` and
  ``F_SEAL_GROW``): a buggy client that truncates it would otherwise make every
  process that touches the lost pages die of SIGBUS.
- Returning pages to the kernel: ``madvise(MADV_REMOVE)`` on a shared mapping
  punches a hole in the memfd (like ``fallocate(PUNCH_HOLE)``); the pages
  vanish from every process's mapping and read back as zeros.

Clients map the arena twice: read-write with :mod:`mmap`, to write new objects
with memoryview slice assignment (a plain ``memcpy``), and read-only with
``mmap(2)`` through ctypes, to hand out views that cannot be written. The
read-only mapping goes through ctypes because Python's ``mmap`` gives no
address, and the address is what lets :class:`ClientMapping` make a tiny
buffer exporter per object (see :meth:`ClientMapping.new_exporter`).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import mmap
import os

PAGE_SIZE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
#: Linux 5.14+; Python's mmap module names it only from 3.13 on.
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
_populate_supported = [True]


class Arena:
    """The raylet's side: owns the memfd and a read-write mapping of it."""

    def __init__(self, capacity: int, name: str = "ember-store"):
        if capacity <= 0:
            raise ValueError(f"object store capacity must be positive, not {capacity}")
        self.capacity = capacity
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, capacity)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            self._mmap = mmap.mmap(self.fd, capacity)
        except BaseException:
            os.close(self.fd)
            raise
        #: Read-write view of the whole arena (for spilling, restoring and transfers).
        self.view = memoryview(self._mmap)
        anchor = ctypes.c_char.from_buffer(self._mmap)
        self._address = ctypes.addressof(anchor)
        del anchor  # the address stays valid while the mapping does

    def populate(self, offset: int, size: int) -> None:
        """Pre-fault a fresh range before writing it; see :meth:`ClientMapping.populate`.

        Releases the GIL: call it on a thread, and the loop keeps running.
        """
        _populate(self._address, offset, size)

    def punch(self, offset: int, size: int) -> int:
        """Give the whole pages inside ``[offset, offset + size)`` back to the kernel.

        Returns the number of bytes released. The range must be free: its
        contents become zeros in every process.
        """
        start = -(-offset // PAGE_SIZE) * PAGE_SIZE
        end = (offset + size) // PAGE_SIZE * PAGE_SIZE
        if end <= start:
            return 0
        self._mmap.madvise(mmap.MADV_REMOVE, start, end - start)
        return end - start

    def identity(self) -> tuple[int, int]:
        """(device, inode) of the memfd: what a peer that opens it checks it got."""
        st = os.fstat(self.fd)
        return st.st_dev, st.st_ino

    def copy_from(self, peer: "PeerArena", src_offset: int, dst_offset: int,
                  size: int) -> None:
        """memcpy ``size`` bytes at ``src_offset`` of ``peer`` to ``dst_offset`` here.

        Releases the GIL (ctypes foreign call): call it on a thread. Both
        ranges must stay mapped until it returns.
        """
        if not (0 <= src_offset <= peer.capacity - size
                and 0 <= dst_offset <= self.capacity - size):
            raise ValueError(f"copy of {size} bytes from {src_offset} to {dst_offset} "
                             "falls outside an arena")
        ctypes.memmove(self._address + dst_offset, peer.address + src_offset, size)

    def resident_bytes(self) -> int:
        """Bytes of the arena backed by memory now (from the fd's st_blocks)."""
        return os.fstat(self.fd).st_blocks * 512

    def close(self) -> None:
        if self.fd < 0:
            return
        _close_mapping(self.view, self._mmap)
        os.close(self.fd)
        self.fd = -1


class ClientMapping:
    """A client's mappings of a raylet's arena.

    Threads: any thread may call :meth:`new_exporter`; ``rw`` writes must go to
    ranges the caller created and has not sealed.
    """

    def __init__(self, raylet_pid: int, store_fd: int, capacity: int):
        try:
            self._fd = _open_arena(raylet_pid, store_fd, os.O_RDWR)
        except OSError as exc:
            raise ConnectionError(
                f"Could not open the object store of the raylet (pid {raylet_pid}): "
                f"{exc}. The client must run on the raylet's node, as the same "
                "user.") from exc
        self.capacity = capacity
        try:
            self._rw_mmap = mmap.mmap(self._fd, capacity)
            address = _map_read_only(self._fd, capacity)
        except BaseException:
            os.close(self._fd)
            raise
        self._ro_address = address
        #: Read-write view of the whole arena.
        self.rw = memoryview(self._rw_mmap)
        anchor = ctypes.c_char.from_buffer(self._rw_mmap)
        self._rw_address = ctypes.addressof(anchor)
        del anchor  # the address stays valid while the mapping does
        # One ctypes array type spanning the arena; an instance of it is the
        # buffer exporter of one object's views (see new_exporter()).
        self._region_type = type("ArenaRegion", (ctypes.c_ubyte * capacity,), {})
        #: Exporters still alive (kept by the client): the read-only mapping must stay.
        self.live_regions = 0

    def new_exporter(self):
        """A new buffer exporter spanning the arena, read-only pages underneath.

        Every view derived from it (``memoryview(e).cast("B").toreadonly()``,
        its slices, ``np.frombuffer`` of those, pickle-5 buffers) keeps the
        exporter alive, so a ``weakref.finalize`` on it runs exactly when the
        last such view is gone: what a pure-Python ``__buffer__`` gives on
        3.12+. Creating one costs no system call and no memory but the object.

        The exporter is a *writable* ctypes array over read-only pages: never
        hand it out, for writing through it would crash the process. Hand out
        ``toreadonly()`` views only.
        """
        return self._region_type.from_address(self._ro_address)

    def populate(self, offset: int, size: int) -> None:
        """Pre-fault ``[offset, offset + size)`` for writing, in one system call.

        On a fresh range this beats faulting each 4 KiB page on first write
        (about 1.3x on this project's VMs, where fresh memory is slow to come
        by), and it runs through ctypes, which releases the GIL: the caller's
        I/O thread keeps running while the kernel allocates. On pages already
        present it costs about as much as copying them, so call it for fresh
        ranges only. A no-op before Linux 5.14 (no MADV_POPULATE_WRITE).

        Raises OSError (ENOMEM) when the memory cannot be had, which a plain
        write would have turned into a SIGBUS that kills the process.
        """
        _populate(self._rw_address, offset, size)

    def close(self) -> None:
        """Unmap; the read-only mapping stays if views of it are still alive."""
        if self._fd < 0:
            return
        _close_mapping(self.rw, self._rw_mmap)
        if self.live_regions == 0:
            _libc.munmap(self._ro_address, self.capacity)
        os.close(self._fd)
        self._fd = -1


class PeerArena:
    """A read-only mapping of another raylet's arena on this host.

    Lets the object manager copy an object between two nodes that share a
    machine (a ``cluster_utils.Cluster``, or raylets in separate network
    namespaces) with one memcpy, instead of sending it through loopback TCP,
    which on this project's VMs runs at a fifth of memcpy's speed. Raises
    OSError when the arena cannot be opened here (another user, another pid
    namespace, the raylet gone) or the file opened is not the one described;
    the caller then uses TCP.
    """

    def __init__(self, pid: int, fd: int, capacity: int, device: int, inode: int):
        own = _open_arena(pid, fd, os.O_RDONLY)
        try:
            st = os.fstat(own)
            if (st.st_dev, st.st_ino) != (device, inode) or st.st_size < capacity:
                raise OSError(errno.ESTALE, f"/proc/{pid}/fd/{fd} is not that raylet's "
                                            "object store here")
            self.address = _map_read_only(own, capacity)
        finally:
            os.close(own)  # the mapping keeps the memfd alive, the fd is not needed
        self.capacity = capacity
        #: Copies reading the mapping now: it is unmapped when the last one ends.
        self.readers = 0
        self.closing = False

    def close(self) -> None:
        """Unmap now, or when the last reader is done (see ``readers``)."""
        self.closing = True
        if self.readers == 0 and self.address:
            _libc.munmap(self.address, self.capacity)
            self.address = 0


@functools.cache
def host_id() -> str:
    """This machine's boot id: raylets that share it may share memory (see PeerArena)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _open_arena(pid: int, fd: int, flags: int) -> int:
    """Open another process's arena memfd through /proc, as a new file description."""
    path = f"/proc/{pid}/fd/{fd}"
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open {path}: {exc.strerror}") from None


def _map_read_only(fd: int, size: int) -> int:
    """mmap(2) ``size`` bytes of ``fd`` read-only and shared; returns the address."""
    address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address is None or address == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of the object store failed: {os.strerror(err)}")
    return address


def _populate(base_address: int, offset: int, size: int) -> None:
    """MADV_POPULATE_WRITE of ``[offset, offset + size)`` of the mapping at ``base_address``."""
    if not _populate_supported[0] or size <= 0:
        return
    start = offset // PAGE_SIZE * PAGE_SIZE
    if _libc.madvise(base_address + start, offset + size - start,
                     MADV_POPULATE_WRITE) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:  # kernel without MADV_POPULATE_WRITE
            _populate_supported[0] = False
            return
        raise OSError(err, f"could not allocate {size} bytes of the object store: "
                           f"{os.strerror(err)}")


def _close_mapping(view: memoryview, mapping: mmap.mmap) -> None:
    view.release()
    try:
        mapping.close()
    except BufferError:  # a view of it is still alive; the mapping dies with it
        pass
