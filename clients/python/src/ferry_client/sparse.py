"""Streams from and to file objects, keeping holes (SEEK_DATA/SEEK_HOLE, STREAM_HOLE)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import io
import os
import stat
from typing import IO, Any, Iterator, Protocol

from . import frame as fr
from .connection import Chunk, Hole, Stream

ZEROS = bytes(1024 * 1024)
BLOCK = 1024 * 1024
"""What one read of a file's prefix takes, and the unit of read-ahead advice."""
READ_AHEAD = 8 * 1024 * 1024
"""How far ahead of what it sends an upload asks the kernel to read (POSIX_FADV_WILLNEED),
so the reads on the event loop find the page cache filled and do not wait for the disk."""
IN_THREAD = 4 * 1024 * 1024
"""Disk work larger than this (hashing a prefix, hashing a long hole, fsync of a download
that wrote this much) runs in a thread, not on the event loop."""


class Hasher(Protocol):
    """A BLAKE3 hasher (the blake3 package's `blake3()`)."""

    def update(self, data: bytes | bytearray | memoryview, /) -> Any: ...

    def digest(self) -> bytes: ...

    def copy(self) -> Hasher: ...


def regions(fd: int, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_hole) runs of the file between `start` and `end`.

    A file system without SEEK_DATA support yields one data run."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no data after pos: a hole to the end
                data = end
            elif error.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, end - pos, False
                return
            else:
                raise
        data = min(data, end)
        if data > pos:
            yield pos, data - pos, True
            pos = data
            continue
        hole = min(os.lseek(fd, pos, os.SEEK_HOLE), end)
        yield pos, hole - pos, False
        pos = hole


def _regular_fd(file: IO[bytes]) -> int | None:
    try:
        fd = file.fileno()
    except (AttributeError, io.UnsupportedOperation, OSError):
        return None
    return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None


async def send_file(
    stream: Stream[Any],
    file: IO[bytes],
    start: int = 0,
    end: int | None = None,
    *,
    sparse: bool = True,
    hasher: Hasher | None = None,
) -> tuple[int, int]:
    """Sends the file's bytes from `start` to `end` (default: its size; for a file object
    without a descriptor, from its position until read() returns nothing), holes as
    STREAM_HOLE when `sparse`; `hasher` is fed every byte sent as it goes (holes as zeros).

    Data is read straight into the frames sent, each no larger than max chunk and the credit
    left; the kernel is asked to read ahead of it. Returns (data bytes, hole bytes). Does not
    finish the stream."""
    fd = _regular_fd(file)
    if fd is None:
        return await _send_reader(stream, file, hasher)
    if end is None:
        end = os.fstat(fd).st_size
    data_bytes = hole_bytes = 0
    advised = start
    runs = regions(fd, start, end) if sparse else iter([(start, end - start, False)])
    for offset, length, is_hole in runs:
        if is_hole:
            await stream.send_hole(length)
            hole_bytes += length
            if hasher is not None:
                await hash_zeros(hasher, length)
            continue
        stop = offset + length
        while offset < stop:
            if advised < offset + READ_AHEAD // 2 and advised < stop:
                advised = max(advised, offset)
                ahead = min(READ_AHEAD, stop - advised)
                _advise(fd, advised, ahead)
                advised += ahead
            await stream.wait_credit(fr.HEADER_SIZE + 1)
            n = min(stream.max_piece(), stop - offset)
            buf = bytearray(fr.HEADER_SIZE + n)
            with memoryview(buf) as view:
                got = os.preadv(fd, [view[fr.HEADER_SIZE :]], offset)
                if hasher is not None:
                    hasher.update(view[fr.HEADER_SIZE : fr.HEADER_SIZE + got])
            if got < n:
                if got == 0:
                    raise EOFError(f"the file ended at {offset}, before {end}")
                del buf[fr.HEADER_SIZE + got :]
            buf[: fr.HEADER_SIZE] = stream.data_header(got)
            stream.write_frame(buf)
            offset += got
            data_bytes += got
    return data_bytes, hole_bytes


def _advise(fd: int, offset: int, length: int) -> None:
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # advice only


async def _send_reader(stream: Stream[Any], file: IO[bytes], hasher: Hasher | None) -> tuple[int, int]:
    sent = 0
    while True:
        await stream.wait_credit(fr.HEADER_SIZE + 1)
        data = file.read(stream.max_piece())
        if not data:
            return sent, 0
        if hasher is not None:
            hasher.update(data)
        await stream.send(data)
        sent += len(data)


def _hash_zeros(hasher: Hasher, length: int) -> None:
    while length > 0:
        n = min(length, len(ZEROS))
        hasher.update(memoryview(ZEROS)[:n])
        length -= n


async def hash_zeros(hasher: Hasher, length: int) -> None:
    """Feeds `length` zeros to the hasher (in a thread when that is long)."""
    if length > IN_THREAD:
        await asyncio.to_thread(_hash_zeros, hasher, length)
    else:
        _hash_zeros(hasher, length)


def _hash_prefix(hasher: Hasher, file: IO[bytes], end: int) -> None:
    fd = _regular_fd(file)
    if fd is None:
        file.seek(0)
        left = end
        while left > 0:
            data = file.read(min(left, BLOCK))
            if not data:
                raise EOFError(f"the file ended at {end - left}, before {end}")
            hasher.update(data)
            left -= len(data)
        return
    buf = bytearray(BLOCK)
    with memoryview(buf) as view:
        for offset, length, is_hole in regions(fd, 0, end):
            if is_hole:
                _hash_zeros(hasher, length)
                continue
            while length > 0:
                got = os.preadv(fd, [view[: min(length, BLOCK)]], offset)
                if got == 0:
                    raise EOFError(f"the file ended at {offset}, before {end}")
                hasher.update(view[:got])
                offset += got
                length -= got


async def hash_prefix(hasher: Hasher, file: IO[bytes], end: int) -> None:
    """Feeds the file's first `end` bytes to the hasher (holes as zeros), in a thread when
    that is not tiny. A file object without a descriptor is read from 0 and left at `end`."""
    if end > IN_THREAD:
        await asyncio.to_thread(_hash_prefix, hasher, file, end)
    else:
        _hash_prefix(hasher, file, end)


async def sync(fd: int, written: int) -> None:
    """fsync, in a thread when `written` bytes may be waiting for the disk."""
    if written > IN_THREAD:
        await asyncio.to_thread(os.fsync, fd)
    else:
        os.fsync(fd)


_IOV_MAX = 1024


def _write_batch(fd: int, pos: int, chunks: list[Chunk], hasher: Hasher | None) -> None:
    """Writes chunks (data and holes, in order) at `pos`, holes skipped; feeds the hasher
    (holes as zeros)."""
    run: list[bytes] = []
    run_at = pos

    def flush() -> None:
        views = [memoryview(c) for c in run]
        at = run_at
        while views:
            n = os.pwritev(fd, views[:_IOV_MAX], at)
            at += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]
        run.clear()

    for chunk in chunks:
        if isinstance(chunk, Hole):
            if run:
                flush()
            pos += chunk.length
            run_at = pos
            if hasher is not None:
                _hash_zeros(hasher, chunk.length)
            continue
        run.append(chunk)
        pos += len(chunk)
        if hasher is not None:
            hasher.update(chunk)
    if run:
        flush()


async def _receive_at(
    stream: Stream[Any], fd: int, pos: int, hasher: Hasher | None
) -> tuple[int, int]:
    """The stream written from `pos`. After its first IN_THREAD bytes, a thread writes and
    hashes each batch of chunks while the next arrives, so the event loop never waits for
    the disk. Returns (the end position, hole bytes)."""
    job: concurrent.futures.Future[None] | None = None
    holes = 0
    inline_until = pos + IN_THREAD
    try:
        while chunks := await stream.recv_many():
            if job is not None:
                await asyncio.wrap_future(job)
                job = None
            at = pos
            for chunk in chunks:
                if isinstance(chunk, Hole):
                    pos += chunk.length
                    holes += chunk.length
                else:
                    pos += len(chunk)
            if pos <= inline_until:
                _write_batch(fd, at, chunks, hasher)
            else:
                job = _EXECUTOR.submit(_write_batch, fd, at, chunks, hasher)
        if job is not None:
            await asyncio.wrap_future(job)
            job = None
    finally:
        if job is not None and not job.done():
            # Failing or cancelled: the thread must be done with the descriptor before it
            # is closed (a batch, bounded by the window).
            concurrent.futures.wait([job])
    return pos, holes


_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ferry-disk")
"""Disk writes of downloads (one batch in flight per download, in order)."""


async def receive_to_file(
    stream: Stream[Any], file: IO[bytes], hasher: Hasher | None = None
) -> tuple[int, int]:
    """Writes the stream into the file from its current position: data written, holes seeked
    over (on a seekable file; zeros written otherwise). A seekable file is first truncated at
    that position (so what holes skip reads as zeros) and ends at the end of what was received.
    Returns (logical bytes, hole bytes)."""
    fd = _regular_fd(file)
    total = holes = 0
    if fd is not None:
        file.flush()
        pos = start = file.tell()
        os.ftruncate(fd, start)
        pos, holes = await _receive_at(stream, fd, pos, hasher)
        os.ftruncate(fd, pos)
        file.seek(pos)
        return pos - start, holes
    seekable = file.seekable()
    if seekable:
        file.truncate()
    async for chunk in stream:
        if isinstance(chunk, Hole):
            holes += chunk.length
            total += chunk.length
            if hasher is not None:
                await hash_zeros(hasher, chunk.length)
            if seekable:
                file.seek(chunk.length, os.SEEK_CUR)
            else:
                left = chunk.length
                while left > 0:
                    n = min(left, len(ZEROS))
                    file.write(memoryview(ZEROS)[:n])
                    left -= n
            continue
        file.write(chunk)
        total += len(chunk)
        if hasher is not None:
            hasher.update(chunk)
    if seekable:
        end = file.tell()
        if file.seek(0, os.SEEK_END) < end:  # ended in a hole: extend with its last zero
            file.seek(end - 1)
            file.write(b"\0")
        file.seek(end)
    return total, holes
