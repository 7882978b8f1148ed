"""A one-off experiment (issue 16, docs/benchmarks.md "perfkern"): the floor of bench/peers.py
(N new durable files on 8 threads: each an O_TMPFILE open, write, fchmod, fsync and link at
its name through /proc/self/fd, then closed) against the same N files made by one thread
through io_uring, no Python thread at all: the opens are submitted W at a time; each open's
completion gets its fchmod here, then a chain of write -> fsync -> link -> close submitted at
once (IOSQE_IO_LINK: each step only after the last one succeeded, so each file is on disk
before it gets its name, as now). The kernel runs what blocks (the open, the fsync, the link)
on its own io-wq workers (`--workers`: at most that many, as IORING_REGISTER_IOWQ_MAX_WORKERS
sets; the kernel's default is min(entries, 4 x CPUs)). Wall, user and system CPU of this
process (io_uring's workers are its threads), rounds interleaved, medians printed. Not used by
the engine: pure Python through ctypes (`syscall`), Linux 5.15 or later, x86-64 or arm64.

    .venv/bin/python bench/uring_floor.py [--count 1000] [--rounds 5] [--workers 8,32]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import mmap
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

from common import run_script
from peers import FLOOR_THREADS, Figures, floor, interleaved, medians

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# io_uring_setup, io_uring_enter, io_uring_register: the same numbers on x86-64 and arm64
_SETUP, _ENTER, _REGISTER = 425, 426, 427
_ENTER_GETEVENTS = 1
_FEAT_SINGLE_MMAP = 1
_OFF_SQ_RING, _OFF_CQ_RING, _OFF_SQES = 0, 0x8000000, 0x10000000
_REGISTER_IOWQ_MAX_WORKERS = 19
_OP_FSYNC, _OP_OPENAT, _OP_CLOSE, _OP_WRITE, _OP_LINKAT = 3, 18, 19, 23, 39
_SQE_IO_LINK = 1 << 2
_AT_FDCWD, _AT_SYMLINK_FOLLOW = -100, 0x400
_STEPS = 4  # write, fsync, link, close: a file's chain after its open


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


class _Sqe(ctypes.Structure):
    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ioprio", ctypes.c_uint16),
        ("fd", ctypes.c_int32),
        ("off", ctypes.c_uint64),  # also addr2 (linkat's new path)
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("op_flags", ctypes.c_uint32),  # open_flags, fsync_flags, hardlink_flags...
        ("user_data", ctypes.c_uint64),
        ("buf_index", ctypes.c_uint16),
        ("personality", ctypes.c_uint16),
        ("file_index", ctypes.c_int32),
        ("addr3", ctypes.c_uint64),
        ("pad2", ctypes.c_uint64),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno() if result == -1 else -result
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class Ring:
    """One io_uring: `entries` submission slots, completions read by `reap`."""

    def __init__(self, entries: int, workers: int | None = None) -> None:
        params = _Params()
        self.fd = _check(_libc.syscall(_SETUP, entries, ctypes.byref(params)), "io_uring_setup")
        if not params.features & _FEAT_SINGLE_MMAP:
            raise OSError("io_uring without IORING_FEAT_SINGLE_MMAP (Linux < 5.4)")
        sq, cq = params.sq_off, params.cq_off
        size = max(sq.array + params.sq_entries * 4, cq.cqes + params.cq_entries * 16)
        prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | mmap.MAP_POPULATE
        self._rings = mmap.mmap(self.fd, size, flags, prot, offset=_OFF_SQ_RING)
        self._sqes_map = mmap.mmap(
            self.fd, params.sq_entries * ctypes.sizeof(_Sqe), flags, prot, offset=_OFF_SQES
        )
        rings = self._rings

        def u32(offset: int) -> ctypes.c_uint32:
            return ctypes.c_uint32.from_buffer(rings, offset)

        self._sq_tail, self._sq_mask = u32(sq.tail), u32(sq.ring_mask).value
        self._sq_head = u32(sq.head)
        self._array = (ctypes.c_uint32 * params.sq_entries).from_buffer(rings, sq.array)
        self._sqes = (_Sqe * params.sq_entries).from_buffer(self._sqes_map)
        self._cq_head, self._cq_tail = u32(cq.head), u32(cq.tail)
        self._cq_mask = u32(cq.ring_mask).value
        self._cqes = cq.cqes
        self.entries = int(params.sq_entries)
        self._pending = 0  # SQEs filled, not submitted
        if workers is not None:  # [bounded, unbounded]: the fsyncs and opens are bounded
            limits = (ctypes.c_uint32 * 2)(workers, workers)
            _check(
                _libc.syscall(_REGISTER, self.fd, _REGISTER_IOWQ_MAX_WORKERS, limits, 2),
                "io_uring_register(IOWQ_MAX_WORKERS)",
            )

    def free(self) -> int:
        """Submission slots free now."""
        used = int(self._sq_tail.value) - int(self._sq_head.value) + self._pending
        return self.entries - used

    def sqe(self) -> _Sqe:
        """The next submission slot, cleared (submitted by the next `enter`)."""
        tail = self._sq_tail.value + self._pending
        index = tail & self._sq_mask
        entry: _Sqe = self._sqes[index]
        ctypes.memset(ctypes.addressof(entry), 0, ctypes.sizeof(_Sqe))
        self._array[index] = index
        self._pending += 1
        return entry

    def enter(self, wait: int) -> None:
        """Submit what was filled; wait until at least `wait` completions are there."""
        submit, self._pending = self._pending, 0
        self._sq_tail.value = (self._sq_tail.value + submit) & 0xFFFFFFFF
        while True:
            done = _libc.syscall(_ENTER, self.fd, submit, wait, _ENTER_GETEVENTS, None, 0)
            if done >= 0 or ctypes.get_errno() != 4:  # EINTR: again
                break
        _check(done, "io_uring_enter")

    def reap(self) -> list[tuple[int, int]]:
        """Every completion there: (user_data, result)."""
        head, tail = self._cq_head.value, self._cq_tail.value
        out = []
        rings = self._rings
        while head != tail:
            offset = self._cqes + (head & self._cq_mask) * 16
            out.append(
                (
                    int.from_bytes(rings[offset : offset + 8], "little"),
                    int.from_bytes(rings[offset + 8 : offset + 12], "little", signed=True),
                )
            )
            head = (head + 1) & 0xFFFFFFFF
        self._cq_head.value = head
        return out

    def close(self) -> None:
        """Close the ring (its maps go with the last view of them: a slot handed out keeps
        its map's buffer exported)."""
        os.close(self.fd)


def uring_floor(out: Path, count: int, *, window: int = 256, workers: int | None = None) -> Figures:
    """`count` durable files in the new directory `out`, as `peers.floor` makes them, through
    one io_uring (see the module doc), at most `window` files in flight."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out.mkdir()
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ring = Ring(max(64, 1 << (window * (1 + _STEPS) - 1).bit_length()), workers)
    dot = ctypes.c_char_p(b".")
    datas = [ctypes.c_char_p(b"file number %d\n" % i) for i in range(count)]
    sizes = [len(b"file number %d\n" % i) for i in range(count)]
    names = [ctypes.c_char_p(b"f%d" % i) for i in range(count)]
    procs: dict[int, ctypes.c_char_p] = {}
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
    opened = made = in_flight = 0
    try:
        while made < count:
            while opened < count and in_flight < window and ring.free() >= 1 + _STEPS:
                sqe = ring.sqe()
                sqe.opcode, sqe.fd, sqe.addr = (
                    _OP_OPENAT,
                    dir_fd,
                    ctypes.cast(dot, ctypes.c_void_p).value or 0,
                )
                sqe.len, sqe.op_flags, sqe.user_data = 0o600, flags, opened << 3
                opened += 1
                in_flight += 1
            ring.enter(1)
            for data, result in ring.reap():
                i, step = data >> 3, data & 7
                if result < 0:
                    raise OSError(-result, f"file {i}, step {step}: {os.strerror(-result)}")
                if step == 0:  # opened: its chain
                    fd = result
                    os.fchmod(fd, 0o644)
                    procs[i] = path = ctypes.c_char_p(b"/proc/self/fd/%d" % fd)
                    chain = [
                        (_OP_WRITE, fd, datas[i], sizes[i], 0, 0),
                        (_OP_FSYNC, fd, None, 0, 0, 0),
                        (_OP_LINKAT, _AT_FDCWD, path, dir_fd, names[i], _AT_SYMLINK_FOLLOW),
                        (_OP_CLOSE, fd, None, 0, 0, 0),
                    ]
                    for n, (op, on, addr, length, addr2, op_flags) in enumerate(chain, 1):
                        sqe = ring.sqe()
                        sqe.opcode, sqe.fd, sqe.len, sqe.op_flags = op, on, length, op_flags
                        if addr is not None:
                            sqe.addr = ctypes.cast(addr, ctypes.c_void_p).value or 0
                        if isinstance(addr2, ctypes.c_char_p):
                            sqe.off = ctypes.cast(addr2, ctypes.c_void_p).value or 0
                        sqe.user_data = i << 3 | n
                        if n < _STEPS:
                            sqe.flags = _SQE_IO_LINK
                elif step == _STEPS:  # closed: done
                    del procs[i]
                    made += 1
                    in_flight -= 1
    finally:
        ring.close()
        os.close(dir_fd)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=256, help="files in flight at most")
    parser.add_argument(
        "--workers", default="8", help="io-wq workers at most, comma-separated (a run each)"
    )
    parser.add_argument(
        "--threads", default=str(FLOOR_THREADS), help="the floor's threads, comma-separated"
    )
    args = parser.parse_args()
    if platform.machine() not in ("x86_64", "aarch64"):
        raise SystemExit(f"{platform.machine()}: the syscall numbers here are x86-64's and arm64's")
    makers: dict[str, Callable[[Path], Figures]] = {}
    for threads in args.threads.split(","):
        makers[f"threads {threads}"] = functools.partial(
            _checked, args.count, floor, threads=int(threads)
        )
    for workers in args.workers.split(","):
        makers[f"io_uring {workers}"] = functools.partial(
            _checked, args.count, uring_floor, window=args.window, workers=int(workers)
        )
    for kind, runs in interleaved(makers, args.rounds, "mgmt-bench-uring-").items():
        wall, user, system = medians(runs)
        print(
            f"{kind:12s}: {args.count} files: wall {wall:.3f} s (min "
            f"{min(r[0] for r in runs):.3f}), user {user:.3f} s, system {system:.3f} s "
            f"(median of {len(runs)}), load {os.getloadavg()[0]:.1f}"
        )


def _checked(count: int, make: Callable[..., Figures], out: Path, **how: int) -> Figures:
    """`make(out, count, **how)`, and check that `out` holds `count` files then."""
    figures = make(out, count, **how)
    if len(os.listdir(out)) != count:
        raise SystemExit(f"{make.__name__} {how}: {out} does not hold {count} files")
    return figures


if __name__ == "__main__":
    run_script(main)
