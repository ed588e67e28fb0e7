"""The volume program (0x766f6c75 "volu", version 1; node/proto/ferry/volume/v1)."""

from __future__ import annotations

import asyncio
import builtins
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from . import frame as fr
from .connection import Connection, Direction, EventCall, Stream
from .errors import FailedPreconditionError, Layer, Side
from .pb import events_pb2
from .pb import volume_pb2 as pb
from .sparse import Hasher, hash_prefix, receive_to_file, send_file
from .sparse import sync as sync_file

CREATE, LIST, INFO, DELETE, UPLOAD, UPLOAD_STATUS, DOWNLOAD, MIGRATE, COPY, LIST_CLUSTER = range(1, 11)
PROGRESS = 100

PathOrFile = str | os.PathLike[str] | IO[bytes]


def _blake3() -> Any:
    try:
        import blake3
    except ImportError:
        return None
    return blake3


def _needs_blake3(what: str) -> Any:
    module = _blake3()
    if module is None:
        raise RuntimeError(f"{what} needs the blake3 package (pip install ferry-client[blake3])")
    return module


def file_checksum(path: str | os.PathLike[str]) -> bytes:
    """BLAKE3 of a file (needs the `blake3` package: `pip install ferry-client[blake3]`): what
    to pass as `upload(checksum=...)` when the caller wants it announced up front."""
    module = _needs_blake3("file_checksum")
    hasher = module.blake3(max_threads=module.blake3.AUTO)
    hasher.update_mmap(os.fspath(path))
    return bytes(hasher.digest())


class ChecksumMismatch(FailedPreconditionError):
    """What arrived does not hash to what the node says it sent (raised by this client)."""


class VolumeClient:
    """Typed calls of the volume program. `timeout` is the deadline of unary calls (seconds)."""

    def __init__(self, conn: Connection, *, timeout: float | None = 30.0) -> None:
        self.conn = conn
        self.timeout = timeout

    async def _unary(self, procedure: int, request: Any, reply_type: type[Any]) -> Any:
        return await self.conn.call(
            fr.VOLUME, 1, procedure, request, reply_type, timeout=self.timeout
        )

    async def create(self, name: str, size: int) -> pb.Volume:
        volume: pb.Volume = await self._unary(CREATE, pb.CreateRequest(name=name, size=size), pb.Volume)
        return volume

    async def list(self) -> builtins.list[pb.Volume]:
        reply: pb.ListReply = await self._unary(LIST, pb.ListRequest(), pb.ListReply)
        return list(reply.volumes)

    async def info(self, name: str) -> pb.Volume:
        volume: pb.Volume = await self._unary(INFO, pb.InfoRequest(name=name), pb.Volume)
        return volume

    async def delete(self, name: str) -> None:
        await self._unary(DELETE, pb.DeleteRequest(name=name), pb.DeleteReply)

    async def upload_status(self, name: str) -> pb.UploadStatusReply:
        reply: pb.UploadStatusReply = await self._unary(
            UPLOAD_STATUS, pb.UploadStatusRequest(name=name), pb.UploadStatusReply
        )
        return reply

    async def list_cluster(self) -> builtins.list[pb.NodeVolumes]:
        reply: pb.ListClusterReply = await self._unary(
            LIST_CLUSTER, pb.ListClusterRequest(), pb.ListClusterReply
        )
        return list(reply.nodes)

    # -- streams --------------------------------------------------------------------------

    def open_upload(self, request: pb.UploadRequest) -> Stream[pb.UploadReply]:
        """The raw UPLOAD stream: send data and holes, then `finish()` for the commit, or
        `finish(pb.UploadFinish(checksum=...))` to vouch for the BLAKE3 of the whole content
        (the node commits only if it matches: FailedPreconditionError otherwise)."""
        return self.conn.stream(fr.VOLUME, 1, UPLOAD, request, pb.UploadReply, Direction.UPLOAD)

    def open_download(self, request: pb.DownloadRequest) -> Stream[pb.DownloadReply]:
        """The raw DOWNLOAD stream: iterate its chunks, then `result()`."""
        return self.conn.stream(fr.VOLUME, 1, DOWNLOAD, request, pb.DownloadReply, Direction.DOWNLOAD)

    async def upload(
        self,
        name: str,
        source: PathOrFile,
        *,
        overwrite: bool = False,
        resume: bool = False,
        replicas: int = 0,
        checksum: bytes | None = None,
        verify: bool | None = None,
        size: int | None = None,
        sparse: bool = True,
    ) -> pb.UploadReply:
        """Uploads a file (a path or a binary file object) into volume `name`; holes stay holes.

        The node commits only what has the size announced (`size`, default: a regular file's)
        and the BLAKE3 vouched for. With `verify` (default: when the blake3 package is
        installed and no `checksum` is given), the content is hashed while it is read and
        sent, in one pass, and its checksum goes in the finish (an `UploadFinish` trailer,
        PROTOCOL.md 7.6). A `checksum` the caller knows up front is announced in the request
        instead (`expected_checksum`; with `verify=True` as well, the two must agree).
        With `resume`, continues the partial upload of `name` from the offset the node has
        (UPLOAD_STATUS; a refusal "in progress" right after a lost connection is retried for
        up to 5 s), hashing the part the node has first. Returns the node's commit
        confirmation; FailedPreconditionError if the content is not what was vouched for."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as opened:
                return await self.upload(
                    name, opened, overwrite=overwrite, resume=resume, replicas=replicas,
                    checksum=checksum, verify=verify, size=size, sparse=sparse,
                )
        file: IO[bytes] = source
        fd: int | None
        try:
            fd = file.fileno()
            if size is None:
                size = os.fstat(fd).st_size
        except (AttributeError, OSError, ValueError):
            fd = None
        module = _needs_blake3("verify") if verify else _blake3()
        hashing = module is not None and (verify or (verify is None and checksum is None))
        new_hasher: Callable[[], Hasher] | None = module.blake3 if hashing else None
        if not resume:
            hasher = new_hasher() if new_hasher is not None else None
            return await self._upload_from(
                file, fd, name, 0, size, checksum, hasher, overwrite, replicas, False, sparse
            )
        prefix: tuple[int, Hasher] | None = None  # the hash of what the node has, kept for retries
        for attempt in range(50):
            status = await self.upload_status(name)
            if not status.exists:
                raise FailedPreconditionError(
                    f"the node has no partial upload of {name!r} to resume",
                    side=Side.CLIENT, layer=Layer.APPLICATION,
                )
            hasher = None
            if new_hasher is not None:
                if prefix is None or prefix[0] != status.offset:
                    prefix = (status.offset, new_hasher())
                    await hash_prefix(prefix[1], file, status.offset)
                hasher = prefix[1].copy()
            try:
                return await self._upload_from(
                    file, fd, name, status.offset, size, checksum, hasher, overwrite, replicas,
                    True, sparse,
                )
            except FailedPreconditionError as error:
                if "in progress" not in error.message or attempt == 49:
                    raise
                await asyncio.sleep(0.1)  # PROTOCOL.md 6.1: the lost upload is still being saved
        raise AssertionError("unreachable")

    async def resume(self, name: str, source: PathOrFile, **kwargs: Any) -> pb.UploadReply:
        """`upload(..., resume=True)`: continues an interrupted upload where the node has it."""
        return await self.upload(name, source, resume=True, **kwargs)

    async def _upload_from(
        self,
        file: IO[bytes],
        fd: int | None,
        name: str,
        start: int,
        size: int | None,
        checksum: bytes | None,
        hasher: Hasher | None,
        overwrite: bool,
        replicas: int,
        resume: bool,
        sparse: bool,
    ) -> pb.UploadReply:
        """One UPLOAD from `start`; `hasher` has been fed the content before `start`."""
        request = pb.UploadRequest(
            name=name,
            expected_checksum=checksum or b"",
            overwrite=overwrite,
            resume=resume,
            replicas=replicas,
        )
        if size is not None:
            request.expected_size = size
        if fd is None and start:
            file.seek(start)
        stream = self.open_upload(request)
        async with stream:
            await send_file(stream, file, start, size, sparse=sparse, hasher=hasher)
            trailer = None if hasher is None else pb.UploadFinish(checksum=bytes(hasher.digest()))
            return await stream.finish(trailer)

    async def download(
        self,
        name: str,
        dest: PathOrFile,
        *,
        offset: int = 0,
        length: int = 0,
        verify: bool | None = None,
        overwrite: bool = True,
        sync: bool = True,
    ) -> pb.DownloadReply:
        """Downloads volume `name` (from `offset`, `length` bytes, 0: to the end) into `dest`.

        A path is written as a temporary file beside it, synced, then renamed: it appears only
        once complete (`overwrite=False` refuses an existing path). A file object is written
        from its position; holes are seeked over. With `verify` (default: when the blake3
        package is installed) the bytes are hashed as they arrive and compared with the
        node's checksum, and a whole volume (offset 0, length 0) also with the checksum the
        volume was stored with, pinning that version (ChecksumMismatch: a path is then not
        written)."""
        if isinstance(dest, (str, os.PathLike)):
            path = Path(dest)
            if not overwrite and path.exists():
                raise FileExistsError(path)
            fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
            try:
                with os.fdopen(fd, "wb") as file:
                    reply = await self._download_into(name, file, offset, length, verify, sync)
                os.replace(temp, path)
            except BaseException:
                os.unlink(temp)
                raise
            return reply
        return await self._download_into(name, dest, offset, length, verify, sync=False)

    async def _download_into(
        self, name: str, file: IO[bytes], offset: int, length: int, verify: bool | None, sync: bool
    ) -> pb.DownloadReply:
        module = _needs_blake3("verify") if verify else _blake3()
        hasher: Hasher | None = module.blake3() if module is not None and verify is not False else None
        # A whole volume, verified, is pinned to the version `info` describes and must hash to
        # its recorded checksum: the node hashes what it reads, so bytes damaged on its disk
        # would otherwise arrive "verified" (docs/STORE.md).
        recorded = b""
        if hasher is not None and offset == 0 and length == 0:
            recorded = (await self.info(name)).checksum
        request = pb.DownloadRequest(name=name, offset=offset, length=length, expected_checksum=recorded)
        stream = self.open_download(request)
        async with stream:
            received, holes = await receive_to_file(stream, file, hasher)
            file.flush()
            if hasher is not None and recorded and bytes(hasher.digest()) != recorded:
                raise ChecksumMismatch(
                    f"volume {name!r}: the node's copy is damaged: its bytes hash to "
                    f"{bytes(hasher.digest()).hex()} but the volume was stored with {recorded.hex()}",
                    side=Side.SERVER, layer=Layer.APPLICATION,
                )
            if sync:
                await sync_file(file.fileno(), received - holes)
            reply = await stream.result()
        if hasher is not None and reply.checksum and bytes(hasher.digest()) != reply.checksum:
            raise ChecksumMismatch(
                f"volume {name!r}: the bytes received do not hash to the node's BLAKE3",
                side=Side.CLIENT, layer=Layer.APPLICATION,
            )
        return reply

    # -- node to node ---------------------------------------------------------------------

    def migrate(self, name: str, to_peer: str, *, overwrite: bool = False) -> EventCall[events_pb2.Event, pb.PeerTransferReply]:
        """MIGRATE: the node streams `name` to its peer `to_peer`, then deletes it here.
        Await the result for the reply; iterate it for PROGRESS events; cancel it to abort."""
        return self._peer(MIGRATE, name, to_peer, overwrite)

    def copy(self, name: str, to_peer: str, *, overwrite: bool = False) -> EventCall[events_pb2.Event, pb.PeerTransferReply]:
        """COPY: like migrate, keeping the volume here."""
        return self._peer(COPY, name, to_peer, overwrite)

    def _peer(self, procedure: int, name: str, to_peer: str, overwrite: bool) -> EventCall[events_pb2.Event, pb.PeerTransferReply]:
        request = pb.PeerTransferRequest(name=name, to_peer=to_peer, overwrite=overwrite)
        return self.conn.call_with_events(
            fr.VOLUME, 1, procedure, request, pb.PeerTransferReply, events_pb2.Event
        )
