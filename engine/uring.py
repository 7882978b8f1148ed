"""io_uring through ctypes: a writing thread's group of new files fsynced with their fsyncs in
flight together (docs/benchmarks.md, "A first run's fsyncs through io_uring").

A first run's writing thread takes up to stopgate.GROUP_MOST new files of a directory at once
(stopgate.Replies): it writes every file's inode, then fsyncs and names each in turn; each
fsync waits for the disk alone. Through a ring (`Ring.fsync_all`), the write-out of all the
group's data is begun first (sync_file_range, one chain: `Ring.write_out`; ext4 allocates the
blocks then, so the fsyncs no longer dirty again each other's inode table blocks), then the
group's fsyncs are submitted with one io_uring_enter, which waits for all their completions
(ctypes releases the GIL there); the kernel runs them on its io-wq workers side by side. Each
file is then named by its own thread's call (safefs.named_new: linked, or an update renamed
over its file), only if its fsync succeeded: a file is durable before it is named, and a
failed fsync is that file's own error. Until 2026-12-06 (third session) the ring linked each
file too (an fsync -> linkat chain a file): each link was one more request for io-wq, whose
end woke the waiting thread; the thread's own link takes the GIL for microseconds instead
(docs/benchmarks.md, "A first run's write-out").

No SQPOLL: the submitting thread's own io_uring_enter makes the kernel read the ring, so the
stores made here to the SQEs and the SQ tail are ordered by that system call (no memory
barriers needed from Python); the CQ tail is read after io_uring_enter returned.

`Rings`: a ring per thread of an executor, made on the thread's first group and closed when the
executor shuts down. A ring is made only if `available()`: probed once per process (the ring's
setup, and the kernel's support of FSYNC and SYNC_FILE_RANGE); otherwise, or with
`MGMT_IO_URING=0` in the environment, the sequential path runs and one debug line says why.
x86-64 and arm64 only (the system call numbers). bench/uring_floor.py uses the same Ring, and
so do a repaired file's spares (resources/_lib/spare.py: their fsyncs, submitted from the event
loop, one ring per loop).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import struct
import threading
from collections.abc import Iterator, Sequence

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value
# mmap's (Linux's, x86-64's and arm64's alike; not the mmap module's: ~1 ms of every start-up)
_PROT_READ, _PROT_WRITE, _MAP_SHARED, _MAP_POPULATE = 1, 2, 1, 0x8000
# io_uring_setup, io_uring_enter, io_uring_register: the same numbers on x86-64 and arm64
SETUP, ENTER, REGISTER = 425, 426, 427
_ENTER_GETEVENTS = 1
_FEAT_SINGLE_MMAP = 1
_OFF_SQ_RING, _OFF_SQES = 0, 0x10000000
_REGISTER_PROBE = 8
REGISTER_IOWQ_MAX_WORKERS = 19
OP_FSYNC, OP_SYNC_FILE_RANGE, OP_OPENAT, OP_CLOSE, OP_WRITE, OP_LINKAT = 3, 8, 18, 19, 23, 39
SYNC_FILE_RANGE_WRITE = 2  # start the write-out of the dirty pages, do not wait for it
_WRITE_OUT = 1 << 62  # a write-out's user_data (fsync_all): never an fsync's
SQE_IO_LINK = 1 << 2
SQE_IO_HARDLINK = 1 << 3  # IOSQE_IO_HARDLINK: the next runs after it, whatever its outcome
SQE_ASYNC = 1 << 4  # IOSQE_ASYNC: run by the kernel's worker, never inline at submission
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
_OP_SUPPORTED = 1
# The knob: MGMT_IO_URING=0 makes no ring (the sequential path).
ENV = "MGMT_IO_URING"
# Submission slots of a thread's ring: one a file (a write-out, then an fsync), at least
# stopgate.GROUP_MOST files.
ENTRIES = 64


class _SqOffsets(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint32)
        for name in ("head", "tail", "ring_mask", "ring_entries", "flags", "dropped", "array")
    ] + [("resv1", ctypes.c_uint32), ("user_addr", ctypes.c_uint64)]


class _CqOffsets(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint32)
        for name in ("head", "tail", "ring_mask", "ring_entries", "overflow", "cqes", "flags")
    ] + [("resv1", ctypes.c_uint32), ("user_addr", ctypes.c_uint64)]


class _Params(ctypes.Structure):
    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", _SqOffsets),
        ("cq_off", _CqOffsets),
    ]


# struct io_uring_sqe: opcode, flags (u8), ioprio (u16), fd (s32), off (u64; also addr2:
# linkat's new path), addr (u64), len, op_flags (u32: open_flags, fsync_flags,
# hardlink_flags...), user_data (u64), buf_index, personality (u16), file_index (s32), addr3,
# pad (u64): packed into its slot in one call (`Ring.put`; a ctypes Structure's memset and
# field stores cost ~10 K instructions an SQE).
_SQE = struct.Struct("=BBHiQQIIQHHiQQ")


_CQE = struct.Struct("=QiI")  # struct io_uring_cqe: user_data (u64), res (s32), flags (u32)


class _ProbeOp(ctypes.Structure):
    _fields_ = [
        ("op", ctypes.c_uint8),
        ("resv", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("resv2", ctypes.c_uint32),
    ]


class _Probe(ctypes.Structure):
    _fields_ = [
        ("last_op", ctypes.c_uint8),
        ("ops_len", ctypes.c_uint8),
        ("resv", ctypes.c_uint16),
        ("resv2", ctypes.c_uint32 * 3),
        ("ops", _ProbeOp * 256),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno() if result == -1 else -result
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def address(value: ctypes.c_char_p) -> int:
    """The address of a C string kept alive by the caller until its completion."""
    return ctypes.cast(value, ctypes.c_void_p).value or 0


class Ring:
    """One io_uring: `entries` submission slots, completions read by `reap`."""

    def __init__(self, entries: int, workers: int | None = None) -> None:
        params = _Params()
        self.fd = _check(_libc.syscall(SETUP, entries, ctypes.byref(params)), "io_uring_setup")
        self._maps: list[tuple[int, int]] = []
        try:
            self._map(params)
            if workers is not None:  # [bounded, unbounded]: fsyncs and opens are bounded
                limits = (ctypes.c_uint32 * 2)(workers, workers)
                _check(
                    _libc.syscall(REGISTER, self.fd, REGISTER_IOWQ_MAX_WORKERS, limits, 2),
                    "io_uring_register(IOWQ_MAX_WORKERS)",
                )
        except BaseException:
            self.close()
            raise

    def _map(self, params: _Params) -> None:
        """Map the rings and the SQEs (libc's mmap: Python's keeps a duplicate of the ring's
        descriptor per map, and cannot be closed while ctypes views of it exist)."""
        if not params.features & _FEAT_SINGLE_MMAP:
            raise OSError(errno.ENOSYS, "io_uring without IORING_FEAT_SINGLE_MMAP (Linux < 5.4)")
        sq, cq = params.sq_off, params.cq_off
        size = max(sq.array + params.sq_entries * 4, cq.cqes + params.cq_entries * 16)
        sqes_size = params.sq_entries * _SQE.size
        base = self._mmap(size, _OFF_SQ_RING)
        sqes = self._mmap(sqes_size, _OFF_SQES)

        def u32(offset: int) -> ctypes.c_uint32:
            return ctypes.c_uint32.from_address(base + offset)

        self._sq_tail, self._sq_mask = u32(sq.tail), u32(sq.ring_mask).value
        self._sq_head = u32(sq.head)
        self._array = (ctypes.c_uint32 * params.sq_entries).from_address(base + sq.array)
        self._sqes = memoryview((ctypes.c_char * sqes_size).from_address(sqes)).cast("B")
        self._cq_head, self._cq_tail = u32(cq.head), u32(cq.tail)
        self._cq_mask = u32(cq.ring_mask).value
        cqes_size = params.cq_entries * _CQE.size
        self._cqes = memoryview((ctypes.c_char * cqes_size).from_address(base + cq.cqes)).cast("B")
        self.entries = int(params.sq_entries)
        self._pending = 0  # SQEs filled, not submitted
        self._tokens = 0  # user_data given so far by fsync_all (each request its own)

    def _mmap(self, size: int, offset: int) -> int:
        prot, flags = _PROT_READ | _PROT_WRITE, _MAP_SHARED | _MAP_POPULATE
        address = _libc.mmap(None, size, prot, flags, self.fd, offset)
        if address in (None, _MAP_FAILED):
            code = ctypes.get_errno()
            raise OSError(code, f"mmap of io_uring: {os.strerror(code)}")
        self._maps.append((address, size))
        return int(address)

    def supports(self, *ops: int) -> bool:
        """Whether the kernel runs every one of `ops` (IORING_REGISTER_PROBE)."""
        probe = _Probe()
        _check(
            _libc.syscall(REGISTER, self.fd, _REGISTER_PROBE, ctypes.byref(probe), 256),
            "io_uring_register(PROBE)",
        )
        return all(op <= probe.last_op and probe.ops[op].flags & _OP_SUPPORTED for op in ops)

    def free(self) -> int:
        """Submission slots free now."""
        used = int(self._sq_tail.value) - int(self._sq_head.value) + self._pending
        return self.entries - used

    def put(
        self,
        opcode: int,
        fd: int,
        user_data: int,
        *,
        flags: int = 0,
        addr: int = 0,
        length: int = 0,
        off: int = 0,
        op_flags: int = 0,
    ) -> None:
        """Fill the next submission slot (submitted by the next `enter`); the rest of it 0."""
        tail = self._sq_tail.value + self._pending
        index = tail & self._sq_mask
        _SQE.pack_into(
            self._sqes, index * _SQE.size, opcode, flags, 0, fd, off, addr, length, op_flags,
            user_data, 0, 0, 0, 0, 0,
        )  # fmt: skip
        self._array[index] = index
        self._pending += 1

    def enter(self, wait: int) -> None:
        """Submit what was filled; wait until at least `wait` completions are there (the GIL
        released meanwhile: a ctypes call). What an earlier enter left in the queue (it failed
        after the tail moved, or submitted part of it) goes first: the kernel takes from the
        head, so a count of the new ones only would leave as many of them behind, for ever
        (a job never completed, a close never run, a wait for either never ending)."""
        tail = (self._sq_tail.value + self._pending) & 0xFFFFFFFF
        self._sq_tail.value, self._pending = tail, 0
        submit = (tail - self._sq_head.value) & 0xFFFFFFFF
        while True:
            done = _libc.syscall(ENTER, self.fd, submit, wait, _ENTER_GETEVENTS, None, 0)
            if done >= 0 or ctypes.get_errno() != errno.EINTR:
                break
            # interrupted: what the kernel took is past the SQ head; the rest, and the wait, again
            submit = (self._sq_tail.value - self._sq_head.value) & 0xFFFFFFFF
            wait = max(0, wait - self.ready())
        _check(done, "io_uring_enter")

    def withdraw(self) -> list[tuple[int, int, int]]:
        """Take back what is in the submission queue, not taken by the kernel (after a failed
        `enter`: the kernel reads the queue only inside io_uring_enter, no SQPOLL, and takes
        from its head): each entry's (opcode, fd, user_data), oldest first. The queue is empty
        after: none of them will run."""
        head = start = self._sq_head.value
        tail = (self._sq_tail.value + self._pending) & 0xFFFFFFFF
        out = []
        while head != tail:
            index = self._array[head & self._sq_mask]
            fields = _SQE.unpack_from(self._sqes, index * _SQE.size)
            out.append((fields[0], fields[3], fields[8]))  # opcode, fd, user_data
            head = (head + 1) & 0xFFFFFFFF
        self._sq_tail.value, self._pending = start, 0
        return out

    def ready(self) -> int:
        """Completions there, not reaped."""
        return (self._cq_tail.value - self._cq_head.value) & 0xFFFFFFFF

    def reap(self) -> list[tuple[int, int]]:
        """Every completion there: (user_data, result)."""
        head, tail = self._cq_head.value, self._cq_tail.value
        out = []
        cqes, mask, unpack, size = self._cqes, self._cq_mask, _CQE.unpack_from, _CQE.size
        while head != tail:
            user_data, res, _flags = unpack(cqes, (head & mask) * size)
            out.append((user_data, res))
            head = (head + 1) & 0xFFFFFFFF
        self._cq_head.value = head
        return out

    def fsync_all(self, fds: Sequence[int]) -> list[int]:
        """Make the complete files open as `fds` durable: the write-out of all their data begun
        first (`write_out`), then their fsyncs, all in flight together (see the module doc).
        Each file's outcome, in order: 0 once fsynced, else its fsync's errno. Naming them is
        the caller's, after (safefs.named_new: each file named only once durable). A failure
        of the ring itself raises OSError: what the kernel has not taken is taken back first
        (`withdraw`), none of it run later on a descriptor its caller closes meanwhile (a
        number then another file's); what it took ends in the ring, under user_data no later
        call waits for (`_taken`), not as a later group's outcomes."""
        outcomes: list[int] = []
        try:
            for start in range(0, len(fds), self.entries):
                part = fds[start : start + self.entries]
                self.write_out(part)
                outcomes += self._fsyncs(part)
        except OSError:
            self.withdraw()
            raise
        return outcomes

    def _taken(self, count: int) -> int:
        """The first of `count` new user_data (fsync_all's: never given again, below
        _WRITE_OUT)."""
        first, self._tokens = self._tokens, self._tokens + count
        return first

    def write_out(self, fds: Sequence[int]) -> None:
        """Begin the write-out of every file's data (sync_file_range(SYNC_FILE_RANGE_WRITE),
        one chain run by one io-wq worker: IOSQE_IO_HARDLINK, each runs whatever the outcome
        of the one before), and wait until each has begun, before any fsync. ext4 gives a
        new file's data its blocks at its write-out (delayed allocation), which changes the
        inode: a group's fsyncs, each beginning its own file's write-out, dirtied again the
        inode table block that a neighbour's fsync had just written (16 inodes a block).
        With every allocation done first, an fsync waits for its data already under way, and
        finds its inode's block clean where a neighbour's fsync wrote it (docs/benchmarks.md,
        "A first run's write-out"). Durability is each file's fsync's, as before: this only
        starts earlier what that fsync would write; a failure here is ignored (the fsync
        writes the data itself, and reports its own failure)."""
        last, first = len(fds) - 1, _WRITE_OUT | self._taken(len(fds))
        for i, fd in enumerate(fds):
            self.put(
                OP_SYNC_FILE_RANGE, fd, first + i, flags=SQE_IO_HARDLINK if i < last else 0,
                op_flags=SYNC_FILE_RANGE_WRITE,
            )  # fmt: skip
        left, ours = len(fds), range(first, first + len(fds))
        self.enter(left)
        while True:
            left -= sum(1 for user_data, _res in self.reap() if user_data in ours)
            if left <= 0:
                return
            self.enter(left)

    def _fsyncs(self, fds: Sequence[int]) -> list[int]:
        """Every file's fsync, all in flight together; each one's errno (0: done)."""
        first = self._taken(len(fds))
        for i, fd in enumerate(fds):
            self.put(OP_FSYNC, fd, first + i)
        results: dict[int, int] = {}
        ours = range(first, first + len(fds))
        self.enter(len(fds))
        while True:
            # (a completion of an earlier call that failed, or a write-out's, is not one of these)
            results.update(done for done in self.reap() if done[0] in ours)
            if len(results) >= len(fds):
                break
            self.enter(len(fds) - len(results))
        return [-min(results[first + i], 0) for i in range(len(fds))]

    def close(self) -> None:
        """Unmap and close the ring (no view of it is used after)."""
        while self._maps:
            _libc.munmap(*self._maps.pop())
        os.close(self.fd)


_probed: list[str | None] = []  # once per process: why no ring can be made (None: one can)
_probe_lock = threading.Lock()


def unavailable() -> str | None:
    """Why this process makes no ring (probed once, said in one debug line), or None."""
    with _probe_lock:
        if not _probed:
            _probed.append(_probe())
            if _probed[0] is not None:
                log.debug("writing without io_uring: %s", _probed[0])
        return _probed[0]


def _probe() -> str | None:
    if os.environ.get(ENV) == "0":
        return f"{ENV}=0"
    machine = os.uname().machine
    if machine not in ("x86_64", "aarch64"):
        return f"no io_uring system call numbers for {machine}"
    try:
        ring = Ring(4)
    except OSError as err:  # ENOSYS, EPERM (kernel.io_uring_disabled, seccomp), ENOMEM...
        return f"io_uring_setup failed: {os.strerror(err.errno) if err.errno else err}"
    try:
        if not ring.supports(OP_FSYNC, OP_SYNC_FILE_RANGE):
            return "the kernel's io_uring runs no FSYNC or SYNC_FILE_RANGE"
    except OSError as err:
        return f"io_uring's probe failed: {err}"
    finally:
        ring.close()
    return None


class Rings:
    """A ring per thread of one executor (stopgate.GatedExecutor), made on the thread's first
    use (`mine`) and closed by `close` (the executor's shutdown); one in use then is closed by
    its thread after that use."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._rings: dict[Ring, bool] = {}  # each ring: whether its thread uses it now
        self._closed = False

    @contextlib.contextmanager
    def mine(self) -> Iterator[Ring | None]:
        """This thread's ring, made if need be; None if none can be made (`unavailable`), or
        once closed."""
        ring: Ring | None = getattr(self._local, "ring", None)
        if ring is None:
            if self._closed or unavailable() is not None:
                yield None
                return
            try:
                ring = Ring(ENTRIES)
            except OSError as err:  # out of memory, of descriptors: this group goes on without
                log.debug("writing without io_uring in this group: %s", err)
                yield None
                return
            self._local.ring = ring
        with self._lock:
            if self._closed:
                ring = None
            else:
                self._rings[ring] = True
        try:
            yield ring
        finally:
            if ring is not None:
                with self._lock:
                    if self._closed:
                        del self._rings[ring]
                        ring.close()
                    else:
                        self._rings[ring] = False

    def close(self) -> None:
        """Close every ring not in use (one in use is closed by its thread right after)."""
        with self._lock:
            self._closed = True
            for ring, busy in list(self._rings.items()):
                if not busy:
                    del self._rings[ring]
                    ring.close()

    def open(self) -> int:
        """How many rings are open (tests)."""
        with self._lock:
            return len(self._rings)


def fsync_all(ring: Ring, fds: Sequence[int]) -> list[int] | None:
    """`ring.fsync_all(fds)`; None if the ring itself failed (some may be fsynced): its caller
    fsyncs them without it (safefs.named_together), none of the files failed by it."""
    try:
        return ring.fsync_all(fds)
    except OSError as err:
        log.debug("io_uring failed a group of %d files (fsynced without it): %s", len(fds), err)
        return None
