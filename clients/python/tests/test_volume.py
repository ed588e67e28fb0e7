"""The volume, events and admin programs through the typed clients, against real nodes."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Iterator

import blake3
import pytest

import ferry_client as fc
from ferry_client import Connection, EventsClient, VolumeClient
from ferry_client import frame as fr
from ferry_client.frame import MessageType as T, Status as S
from ferry_client.pb import volume_pb2
from support import WAIT, Node, RawPeer, Recorder, call_header, error_body, record

MiB = 1 << 20
UPLOAD = 5


def upload_call(rec: Recorder) -> tuple[fr.Frame, volume_pb2.UploadRequest]:
    """The last UPLOAD CALL sent, and its request."""
    call = rec.find("tx", lambda f: f.header.type == T.CALL and f.header.procedure == UPLOAD)[-1]
    request = volume_pb2.UploadRequest()
    request.ParseFromString(call.payload)
    return call, request


def finish_of(rec: Recorder, serial: int) -> fr.Frame:
    """Our finish of an upload: its one STREAM/OK, after every data and hole frame."""
    sent = [f for d, f in rec.serial(serial) if d == "tx" and f.header.type in (T.STREAM, T.STREAM_HOLE)]
    finishes = [f for f in sent if f.header.type == T.STREAM and f.header.status == S.OK]
    assert len(finishes) == 1 and sent[-1] is finishes[0]
    return finishes[0]


def vouched(rec: Recorder, serial: int) -> bytes:
    """The checksum our finish vouched for (b"" for an empty finish)."""
    trailer = volume_pb2.UploadFinish()
    trailer.ParseFromString(finish_of(rec, serial).payload)
    return trailer.checksum


def sparse_file(path: Path, size: int = 20 * MiB) -> bytes:
    """Data at a few places, holes elsewhere (and at the end); returns the logical content."""
    content = bytearray(size)
    with open(path, "wb") as f:
        for offset, length in [(0, 300_000), (5 * MiB, MiB + 7), (12 * MiB + 4096, 65536)]:
            chunk = bytes((offset + i) * 7 % 256 for i in range(length))
            f.seek(offset)
            f.write(chunk)
            content[offset : offset + length] = chunk
        f.truncate(size)
    return bytes(content)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


async def test_create_list_info_delete(conn: Connection) -> None:
    volumes = VolumeClient(conn)
    assert await volumes.list() == []
    made = await volumes.create("scratch", 10 * MiB)
    assert (made.name, made.size) == ("scratch", 10 * MiB)
    assert made.allocated < MiB
    info = await volumes.info("scratch")
    assert info.size == 10 * MiB
    assert [v.name for v in await volumes.list()] == ["scratch"]
    with pytest.raises(fc.AlreadyExistsError):
        await volumes.create("scratch", 1)
    with pytest.raises(fc.BadRequestError):
        await volumes.create(".hidden", 1)
    await volumes.delete("scratch")
    with pytest.raises(fc.NotFoundError):
        await volumes.info("scratch")
    with pytest.raises(fc.NotFoundError):
        await volumes.delete("scratch")


async def test_a_sparse_file_goes_up_and_comes_back_sparse(conn: Connection, tmp_path: Path) -> None:
    src = tmp_path / "disk.img"
    content = sparse_file(src)
    rec = record(conn)
    volumes = VolumeClient(conn)
    reply = await volumes.upload("disk", src)
    assert reply.volume.size == len(content)
    assert reply.volume.checksum == blake3.blake3(content).digest()
    assert reply.hole_bytes > 15 * MiB
    holes = rec.find("tx", lambda f: f.header.type == T.STREAM_HOLE)
    assert len(holes) >= 3
    call, request = upload_call(rec)
    # One pass: the size is announced, the checksum hashed while sending and vouched at the end.
    assert request.expected_size == len(content) and request.expected_checksum == b""
    assert vouched(rec, call.header.serial) == reply.volume.checksum
    assert reply.volume.allocated < 4 * MiB

    dest = tmp_path / "copy.img"
    down = await volumes.download("disk", dest)
    assert down.bytes == len(content) and down.hole_bytes > 15 * MiB
    assert dest.read_bytes() == content
    assert allocated(dest) < 4 * MiB  # holes were seeked over, not written
    assert not list(tmp_path.glob(".copy.img.*"))  # the temporary file was renamed

    buffer = io.BytesIO()
    await volumes.download("disk", buffer, offset=5 * MiB, length=2 * MiB)
    assert buffer.getvalue() == content[5 * MiB : 7 * MiB]


async def test_a_trailing_hole_gives_the_file_its_size(conn: Connection, tmp_path: Path) -> None:
    src = tmp_path / "tail.img"
    with open(src, "wb") as f:
        f.write(b"head")
        f.truncate(3 * MiB)
    volumes = VolumeClient(conn)
    await volumes.upload("tail", src)
    dest = tmp_path / "tail.out"
    with open(dest, "wb") as f:
        f.write(b"old content that must go" * 1000)
        f.seek(0)
        await volumes.download("tail", f)
    assert dest.stat().st_size == 3 * MiB
    assert dest.read_bytes() == b"head" + bytes(3 * MiB - 4)


async def test_uploading_over_an_existing_name_is_refused_after_the_first_credit(conn: Connection, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(os.urandom(3 * MiB))
    volumes = VolumeClient(conn)
    await volumes.upload("dup", src)
    rec = record(conn)
    with pytest.raises(fc.AlreadyExistsError):
        await volumes.upload("dup", src)
    refused = rec.find("rx", lambda f: f.header.type == T.REPLY)
    assert refused and refused[0].header.status == S.ERROR
    closing = rec.find("tx", lambda f: f.header.type == T.STREAM and f.header.status == S.ERROR)
    assert len(closing) == 1 and error_body(closing[0].payload).code == fc.ErrorCode.ABORTED
    assert conn.open_serials == []
    replaced = await volumes.upload("dup", io.BytesIO(b"new"), overwrite=True)
    assert replaced.volume.size == 3


async def test_a_wrong_checksum_or_size_fails_the_commit(conn: Connection, tmp_path: Path) -> None:
    volumes = VolumeClient(conn)
    src = tmp_path / "f"
    src.write_bytes(b"12345")
    rec = record(conn)
    with pytest.raises(fc.FailedPreconditionError):
        await volumes.upload("bad", src, checksum=bytes(32))  # announced up front
    call, request = upload_call(rec)
    assert request.expected_checksum == bytes(32)
    assert finish_of(rec, call.header.serial).payload == b""  # nothing hashed: the node checks
    with pytest.raises(fc.FailedPreconditionError):
        # Announced and vouched for: they must agree (and the file's is not zeros).
        await volumes.upload("bad", src, checksum=bytes(32), verify=True)
    call, request = upload_call(rec)
    assert request.expected_checksum == bytes(32)
    assert vouched(rec, call.header.serial) == blake3.blake3(b"12345").digest()
    with pytest.raises(fc.FailedPreconditionError):
        await volumes.upload("bad", io.BytesIO(b"12345"), size=6)
    with pytest.raises(fc.NotFoundError):
        await volumes.info("bad")
    assert await volumes.list() == []
    assert conn.open_serials == []


async def test_a_file_object_is_hashed_as_it_is_sent(conn: Connection) -> None:
    volumes = VolumeClient(conn)
    rec = record(conn)
    data = os.urandom(3 * MiB + 5)
    reply = await volumes.upload("obj", io.BytesIO(data))
    call, request = upload_call(rec)
    assert not request.HasField("expected_size") and request.expected_checksum == b""
    assert vouched(rec, call.header.serial) == reply.volume.checksum == blake3.blake3(data).digest()
    await volumes.upload("plain", io.BytesIO(data), verify=False)
    call, _ = upload_call(rec)
    assert finish_of(rec, call.header.serial).payload == b""  # an empty finish: nothing vouched


async def test_a_wrong_vouched_checksum_commits_nothing(conn: Connection) -> None:
    volumes = VolumeClient(conn)
    rec = record(conn)
    stream = volumes.open_upload(volume_pb2.UploadRequest(name="vouched", expected_size=5))
    await stream.send(b"12345")
    with pytest.raises(fc.FailedPreconditionError) as caught:
        await stream.finish(volume_pb2.UploadFinish(checksum=blake3.blake3(b"54321").digest()))
    assert (caught.value.side, caught.value.layer) == (fc.Side.SERVER, fc.Layer.APPLICATION)
    finish = finish_of(rec, stream.serial)
    assert finish.payload == b"\x0a\x20" + blake3.blake3(b"54321").digest()  # on the wire
    assert await volumes.list() == []
    assert not (await volumes.upload_status("vouched")).exists
    assert conn.open_serials == []

    right = volumes.open_upload(volume_pb2.UploadRequest(name="vouched"))
    await right.send(b"12345")
    reply = await right.finish(volume_pb2.UploadFinish(checksum=blake3.blake3(b"12345").digest()))
    assert reply.volume.checksum == blake3.blake3(b"12345").digest()
    assert [v.name for v in await volumes.list()] == ["vouched"]


async def test_a_trailer_that_is_no_upload_finish_is_a_bad_request(conn: Connection) -> None:
    volumes = VolumeClient(conn)
    short = volumes.open_upload(volume_pb2.UploadRequest(name="short"))
    await short.send(b"x")
    with pytest.raises(fc.BadRequestError):
        await short.finish(volume_pb2.UploadFinish(checksum=b"not 32 bytes"))
    junk = volumes.open_upload(volume_pb2.UploadRequest(name="junk"))
    await junk.send(b"x")
    with pytest.raises(fc.BadRequestError):
        await junk.finish(b"\xff" * fr.MAX_TRAILER)  # the largest trailer allowed, not a message
    assert await volumes.list() == []
    assert conn.open_serials == []


async def test_a_trailer_over_4096_bytes(conn: Connection, node: Node) -> None:
    # This client refuses to send one: nothing goes out and the stream stays open.
    stream = VolumeClient(conn).open_upload(volume_pb2.UploadRequest(name="long"))
    await stream.send(b"x")
    with pytest.raises(ValueError):
        stream.close_send(b"\0" * (fr.MAX_TRAILER + 1))
    assert (await stream.finish()).volume.size == 1
    # A peer that sends one anyway: PROTOCOL_VIOLATION on the stream layer, nothing committed.
    peer = await RawPeer.unix(node.unix)
    request = volume_pb2.UploadRequest(name="longer")
    peer.send(call_header(fr.VOLUME, UPLOAD, T.CALL, 1, S.OK), request.SerializeToString())
    await peer.recv_where(lambda f: f.header.type == T.CREDIT and f.header.serial == 1)
    peer.send(call_header(fr.VOLUME, UPLOAD, T.STREAM, 1, S.CONTINUE), b"x")
    peer.send(call_header(fr.VOLUME, UPLOAD, T.STREAM, 1, S.OK), b"\0" * (fr.MAX_TRAILER + 1))
    reply = await peer.recv_where(lambda f: f.header.type == T.REPLY and f.header.serial == 1)
    body = error_body(reply.payload)
    assert reply.header.status == S.ERROR
    assert (body.code, body.side, body.layer) == (
        fc.ErrorCode.PROTOCOL_VIOLATION, fc.Side.SERVER, fc.Layer.STREAM,
    )
    await peer.close()
    assert [v.name for v in await VolumeClient(conn).list()] == ["long"]


async def test_an_upload_cut_by_a_lost_connection_resumes(node: Node, tmp_path: Path) -> None:
    src = tmp_path / "big"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    conn = await node.connect()
    volumes = VolumeClient(conn)
    stream = volumes.open_upload(volume_pb2.UploadRequest(
        name="big", expected_size=len(data), expected_checksum=blake3.blake3(data).digest()))
    await stream.send(data[: 5 * MiB])
    await stream.wait_credit(1 << 19)  # the node is draining what we sent
    assert conn._transport is not None
    conn._transport.abort()  # the connection is lost (not an abort: the partial is kept)
    await conn.wait_closed()

    again = await node.connect()
    volumes = VolumeClient(again)
    async with asyncio.timeout(WAIT):
        while not (status := await volumes.upload_status("big")).exists:
            pass  # the node notices the lost connection and saves the partial upload
    assert 0 < status.offset <= 5 * MiB
    rec = record(again)
    reply = await volumes.resume("big", src)
    assert reply.resumed_from == status.offset or reply.resumed_from > 0
    assert reply.volume.size == len(data)
    assert reply.volume.checksum == blake3.blake3(data).digest()
    call, request = upload_call(rec)
    assert request.resume and request.expected_checksum == b""
    # What was sent starts where the node was; the finish vouches for the whole content.
    sent = sum(len(f.payload) for d, f in rec.serial(call.header.serial)
               if d == "tx" and f.header.type == T.STREAM and f.header.status == S.CONTINUE)
    assert sent == len(data) - reply.resumed_from
    assert vouched(rec, call.header.serial) == blake3.blake3(data).digest()
    out = tmp_path / "out"
    await volumes.download("big", out)
    assert out.read_bytes() == data
    await again.aclose()


async def test_cancelling_a_download_leaves_no_file(conn: Connection, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(64 * MiB))
    volumes = VolumeClient(conn)
    await volumes.upload("big", src)
    rec = record(conn)
    task = asyncio.create_task(volumes.download("big", tmp_path / "out"))
    # Cancelled once the thread that writes is at work (past the first 4 MiB).
    await rec.wait_for("rx", lambda f: sum(len(g.payload) for g in rec.find(
        "rx", lambda g: g.header.type == T.STREAM)) > 8 * MiB)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    async with asyncio.timeout(WAIT):
        while conn.open_serials:
            await asyncio.sleep(0.01)
    await volumes.download("big", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


async def test_a_volume_damaged_on_the_node_is_refused_and_not_written(
    conn: Connection, node: Node, tmp_path: Path
) -> None:
    src = tmp_path / "disk"
    src.write_bytes(os.urandom(3 * MiB))
    volumes = VolumeClient(conn)
    await volumes.upload("disk", src)
    # Bit rot: a byte of the stored volume changes, its record does not.
    stored = node.data / "volumes" / "disk"
    with open(stored, "r+b") as f:
        f.seek(MiB + 1)
        byte = f.read(1)
        f.seek(MiB + 1)
        f.write(bytes([byte[0] ^ 0x40]))
    out = tmp_path / "out"
    with pytest.raises(fc.ChecksumMismatch, match="damaged"):
        await volumes.download("disk", out)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    # A range is not checked against the record (it has no checksum of its own) and arrives.
    part = io.BytesIO()
    await volumes.download("disk", part, offset=MiB, length=4096)
    assert part.getvalue()[1] == byte[0] ^ 0x40


async def test_resume_without_a_partial_upload_is_refused(conn: Connection, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(fc.FailedPreconditionError):
        await VolumeClient(conn).resume("never-started", src)


async def test_events_subscription_sees_what_happens(conn: Connection, node: Node) -> None:
    other = await node.connect()
    async with EventsClient(conn).subscribe() as sub:
        events = aiter(sub)
        first = await anext(events)
        assert first.WhichOneof("kind") == "subscribed"
        await VolumeClient(other).create("ev", 4096)
        created = await anext(events)
        assert created.WhichOneof("kind") == "created" and created.created.name == "ev"
        await VolumeClient(other).delete("ev")
        deleted = await anext(events)
        assert deleted.WhichOneof("kind") == "deleted" and deleted.deleted.name == "ev"
    assert conn.open_serials == []  # leaving the block cancelled the subscription
    await other.aclose()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """Node "a" with node b as its peer "b" (over b's unix socket), progress every 1 MiB."""
    b = Node(tmp_path / "b", tcp=False)
    a = Node(
        tmp_path / "a",
        f'name = "a"\n[[peers]]\nname = "b"\naddress = "unix://{b.unix}"\n\n[events]\nprogress_every_bytes = 1048576\n',
        tcp=False,
    )
    yield a, b
    a.stop()
    b.stop()


async def test_migrate_and_copy_to_a_peer_with_progress(pair: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = pair
    ca, cb = await a.connect(), await b.connect()
    va, vb = VolumeClient(ca), VolumeClient(cb)
    src = tmp_path / "m"
    data = os.urandom(6 * MiB)
    src.write_bytes(data)
    await va.upload("m", src)

    copy = va.copy("m", "b")
    progress = [e.progress.bytes async for e in copy if e.WhichOneof("kind") == "progress"]
    reply = await copy
    assert reply.peer == "b" and reply.volume.size == len(data)
    assert progress and progress == sorted(progress)
    assert (await va.info("m")).size == len(data)  # copy keeps it here
    assert (await vb.info("m")).checksum == blake3.blake3(data).digest()

    with pytest.raises(fc.AlreadyExistsError):
        await va.migrate("m", "b")
    moved = await va.migrate("m", "b", overwrite=True)
    # b holds this very version since the copy: the delta sends none of it (PROTOCOL.md 14).
    assert (moved.bytes_sent, moved.kept_bytes) == (0, len(data))
    with pytest.raises(fc.NotFoundError):
        await va.info("m")  # migrate deletes it here
    nodes = await va.list_cluster()
    assert [(n.node, n.reachable, [v.name for v in n.volumes]) for n in nodes] == [
        ("a", True, []), ("b", True, ["m"]),  # the node that answers calls itself by its name
    ]
    with pytest.raises(fc.NotFoundError):
        await va.copy("m", "b")
    await ca.aclose()
    await cb.aclose()


async def test_cancelling_a_migration_leaves_both_nodes_as_they_were(pair: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = pair
    ca, cb = await a.connect(), await b.connect()
    va = VolumeClient(ca)
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(MiB))
    await va.upload("big", src)
    call = va.migrate("big", "b")
    async for event in call:
        if event.WhichOneof("kind") == "progress":
            break  # the data is moving
    result = await call.cancel()
    assert isinstance(result, (fc.CancelledError, volume_pb2.PeerTransferReply))
    if isinstance(result, fc.CancelledError):
        assert (await va.info("big")).size == 256 * MiB
        assert await VolumeClient(cb).list() == []
    await ca.aclose()
    await cb.aclose()
