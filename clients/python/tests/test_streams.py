"""Sections 7.4-7.6 and 8 on the wire: uploads, downloads, both ways, holes, credit, aborts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator, Iterator

import blake3
import pytest

import ferry_client as fc
from ferry_client import Connection, Hole, TestClient
from ferry_client import frame as fr
from ferry_client.frame import MessageType as T, Status as S
from ferry_client.pb import test_pb2
from support import WAIT, Node, RawPeer, Recorder, call_header, error_body, record

WINDOW = 64 * 1024

SMALL_WINDOWS = f"""
[limits]
stream_window = {WINDOW}
connection_window = {WINDOW}
max_chunk = 16384
"""


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Node]:
    """A node with 64 KiB windows and 16 KiB chunks: credit runs out many times per stream."""
    n = Node(tmp_path / "small", SMALL_WINDOWS)
    yield n
    n.stop()


@pytest.fixture
async def sconn(small: Node) -> AsyncIterator[Connection]:
    c = await small.connect(options=fc.Options(stream_window=WINDOW, max_chunk=16384))
    yield c
    await c.aclose()


def cost(frame: fr.Frame) -> int:
    return fr.HEADER_SIZE + len(frame.payload)


def assert_credit_respected(rec: Recorder, serial: int, sender: str) -> int:
    """Replays a serial's frames: `sender` never sent a data or hole frame beyond the credit
    the other side had granted. Returns the total granted."""
    receiver = "rx" if sender == "tx" else "tx"
    credit = granted = 0
    for direction, frame in rec.serial(serial):
        h = frame.header
        if direction == receiver and h.type == T.CREDIT:
            grant = fr.decode_grant(frame.payload)
            credit += grant
            granted += grant
        elif direction == sender and h.type in (T.STREAM, T.STREAM_HOLE) and h.status == S.CONTINUE:
            credit -= cost(frame)
            assert credit >= 0, f"{sender} sent beyond credit on serial {serial}"
    return granted


def pattern(offset: int, length: int) -> bytes:
    return bytes((offset + i) % 251 for i in range(length))


async def test_upload_with_holes_is_paced_by_credit_and_confirmed_by_the_reply(sconn: Connection) -> None:
    rec = record(sconn)
    data = pattern(0, 700_000)
    sink = TestClient(sconn).sink()
    await sink.send(data[:300_000])
    await sink.send_hole(5_000_000)
    await sink.send(data[300_000:])
    await sink.send_hole(0)  # a hole of 0 means nothing (and costs its 40 bytes)
    reply = await sink.finish()
    assert reply.bytes == 5_700_000
    assert reply.hole_bytes == 5_000_000
    assert reply.checksum == blake3.blake3(data[:300_000] + bytes(5_000_000) + data[300_000:]).digest()
    granted = assert_credit_respected(rec, sink.serial, "tx")
    assert granted > WINDOW  # the server returned credit as it drained
    sent = rec.find("tx", lambda f: f.header.serial == sink.serial and f.header.type == T.STREAM)
    assert max(len(f.payload) for f in sent) <= 16384
    assert [f.header.status for f in sent][-1] == S.OK  # the finish, then the REPLY
    assert sconn.open_serials == []


async def test_download_with_holes_is_credited_as_consumed(sconn: Connection) -> None:
    rec = record(sconn)
    source = TestClient(sconn).source(3_000_000, data_run=100_000, hole_run=150_000)
    content = bytearray()
    holes = 0
    async for chunk in source:
        if isinstance(chunk, Hole):
            holes += chunk.length
            content += bytes(chunk.length)
        else:
            content += chunk
    reply = await source.result()
    expected = bytearray(3_000_000)
    for i in range(0, 3_000_000, 250_000):
        expected[i : i + 100_000] = pattern(i, 100_000)
    assert content == expected
    assert holes == 3_000_000 - 12 * 100_000
    assert reply.bytes == 3_000_000 and reply.checksum == blake3.blake3(content).digest()
    granted = assert_credit_respected(rec, source.serial, "rx")
    first = rec.find("tx", lambda f: f.header.serial == source.serial and f.header.type == T.CREDIT)[0]
    assert fr.decode_grant(first.payload) == WINDOW  # right after the CALL (section 7.5)
    assert granted > 10 * WINDOW
    ends = [f for d, f in rec.serial(source.serial) if f.header.type == T.STREAM and f.header.status == S.OK]
    assert len(ends) == 2  # the server's finish, then our confirmation
    assert sconn.open_serials == []


async def test_a_consumer_that_stops_reading_stops_its_sender_after_one_window(sconn: Connection) -> None:
    rec = record(sconn)
    source = TestClient(sconn).source(10_000_000)

    def buffered() -> int:
        return sum(cost(f) for f in rec.find("rx", lambda f: f.header.serial == source.serial and f.header.type == T.STREAM))

    # The server spends the whole window (it may split down to its last 28 bytes) and stops.
    await rec.wait_for("rx", lambda f: buffered() > WINDOW - (fr.HEADER_SIZE + 1) - 16384)
    async with asyncio.timeout(WAIT):
        while buffered() <= WINDOW - 2 * fr.HEADER_SIZE:
            before = buffered()
            await rec.wait_for("rx", lambda f: buffered() > before)
    assert buffered() <= WINDOW
    assert len(rec.find("tx", lambda f: f.header.type == T.CREDIT)) == 1
    # Echo still answers: only this stream is stalled.
    assert await TestClient(sconn).echo(b"e") == b"e"
    total = 0
    async for chunk in source:
        assert isinstance(chunk, bytes)
        total += len(chunk)
    assert total == 10_000_000
    assert (await source.result()).bytes == 10_000_000


async def test_both_directions_at_once(sconn: Connection) -> None:
    rec = record(sconn)
    stream = TestClient(sconn).echo_stream()
    data = pattern(0, 1_000_000)

    async def send() -> None:
        await stream.send(data[:400_000])
        await stream.send_hole(123_456)
        await stream.send(data[400_000:])
        stream.close_send()

    sender = asyncio.create_task(send())
    got = bytearray()
    holes = []
    async for chunk in stream:
        if isinstance(chunk, Hole):
            holes.append(chunk.length)
            got += bytes(chunk.length)
        else:
            got += chunk
    await sender
    reply = await stream.result()
    assert holes == [123_456]
    assert got == data[:400_000] + bytes(123_456) + data[400_000:]
    assert reply.bytes == len(got)
    assert_credit_respected(rec, stream.serial, "tx")
    assert_credit_respected(rec, stream.serial, "rx")
    oks = [d for d, f in rec.serial(stream.serial) if f.header.type == T.STREAM and f.header.status == S.OK]
    assert oks.count("tx") == 2  # our finish, then our confirmation of the server's
    assert sconn.open_serials == []


async def test_bidirectional_confirmation_waits_for_our_finish(conn: Connection) -> None:
    rec = record(conn)
    stream = TestClient(conn).echo_stream()
    await stream.send(b"ping")
    assert await stream.recv() == b"ping"
    stream.close_send()
    assert await stream.recv() is None
    assert (await stream.result()).bytes == 4
    frames = [(d, f.header.status) for d, f in rec.serial(stream.serial) if f.header.type == T.STREAM]
    assert frames[-3:] == [("tx", S.OK), ("rx", S.OK), ("tx", S.OK)]


@pytest.mark.parametrize("code,error", [(fc.ErrorCode.CANCELLED, fc.CancelledError), (fc.ErrorCode.ABORTED, fc.AbortedError)])
async def test_client_abort_of_an_upload(conn: Connection, code: fc.ErrorCode, error: type[fc.FerryError]) -> None:
    rec = record(conn)
    sink = TestClient(conn).sink()
    await sink.send(b"x" * 100_000)
    result = await sink.abort(code, "stop")
    assert type(result) is error
    assert isinstance(result, fc.FerryError)
    assert (result.side, result.layer) == (fc.Side.CLIENT, fc.Layer.STREAM)
    abort = rec.find("tx", lambda f: f.header.type == T.STREAM and f.header.status == S.ERROR)
    assert len(abort) == 1 and error_body(abort[0].payload).code == code
    assert conn.open_serials == []


async def test_client_abort_of_a_download_discards_what_follows(conn: Connection) -> None:
    rec = record(conn)
    source = TestClient(conn).source(50_000_000)
    assert isinstance(await source.recv(), bytes)
    result = await source.abort(fc.ErrorCode.ABORTED, "my sink failed")
    assert isinstance(result, fc.AbortedError)
    assert conn.open_serials == []
    assert await TestClient(conn).echo(b"ok") == b"ok"
    replies = rec.find("rx", lambda f: f.header.type == T.REPLY and f.header.serial == source.serial)
    assert len(replies) == 1


async def test_cancelling_a_task_in_a_stream_aborts_it(conn: Connection) -> None:
    rec = record(conn)
    source = TestClient(conn).source(50_000_000)

    async def consume_slowly() -> None:
        async for _ in source:
            await asyncio.Event().wait()  # blocks forever on the first chunk

    task = asyncio.create_task(consume_slowly())
    await rec.wait_for("rx", lambda f: f.header.type == T.STREAM)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    abort = await rec.wait_for("tx", lambda f: f.header.type == T.STREAM and f.header.status == S.ERROR)
    assert error_body(abort.payload).code == fc.ErrorCode.CANCELLED
    reply = await rec.wait_for("rx", lambda f: f.header.type == T.REPLY)
    body = error_body(reply.payload)
    assert (body.code, body.side, body.layer) == (10, 1, 3)
    assert conn.open_serials == []


async def test_cancel_frame_on_a_streaming_call_then_its_closing_abort(conn: Connection) -> None:
    rec = record(conn)
    sink = TestClient(conn).sink(stall_after=1)
    await sink.send(b"abc")
    result = await sink.cancel()
    assert isinstance(result, fc.CancelledError)
    kinds = [(d, f.header.type, f.header.status) for d, f in rec.serial(sink.serial)]
    cancel_at = kinds.index(("tx", T.CANCEL, S.OK))
    reply_at = next(i for i, k in enumerate(kinds) if k[1] == T.REPLY)
    assert cancel_at < reply_at
    assert kinds[reply_at + 1] == ("tx", T.STREAM, S.ERROR)  # section 7.3: closes our side
    assert conn.open_serials == []


async def test_server_abort_mid_download_is_answered_by_our_stream_error(conn: Connection) -> None:
    rec = record(conn)
    source = TestClient(conn).source(10_000_000, fail_after=1_000_000)
    with pytest.raises(fc.AbortedError) as caught:
        async for _ in source:
            pass
    assert caught.value.side == fc.Side.SERVER
    frames = [(d, f.header.type, f.header.status) for d, f in rec.serial(source.serial)]
    reply_at = frames.index(("rx", T.REPLY, S.ERROR))
    assert frames[reply_at + 1] == ("tx", T.STREAM, S.ERROR)
    abort = rec.find("tx", lambda f: f.header.type == T.STREAM and f.header.status == S.ERROR)
    assert error_body(abort[0].payload).code == fc.ErrorCode.ABORTED
    with pytest.raises(fc.AbortedError):
        await source.result()
    assert conn.open_serials == []


async def test_a_stalled_sink_stops_the_sender_until_cancelled(sconn: Connection) -> None:
    rec = record(sconn)
    sink = TestClient(sconn).sink(stall_after=1000)

    async def send_forever() -> None:
        while True:
            await sink.send(b"y" * 16384)

    task = asyncio.create_task(send_forever())
    # The sink took 1000 bytes and stops; we run out of credit within two windows.
    async with asyncio.timeout(WAIT):
        while not (sink.credit < fr.HEADER_SIZE + 1 and sink._call.out_waiter is not None):
            count = len(rec.frames)
            await rec.wait_for("tx", lambda f: len(rec.frames) > count)
    sent = assert_credit_respected(rec, sink.serial, "tx")
    assert sent <= 2 * WINDOW
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reply = await rec.wait_for("rx", lambda f: f.header.type == T.REPLY and f.header.serial == sink.serial)
    assert error_body(reply.payload).code == fc.ErrorCode.CANCELLED


# -- raw frames: what the server does with a client that breaks section 7 -------------------


async def _sink_with_credit(peer: RawPeer, serial: int, stall_after: int = 0) -> int:
    request = test_pb2.SinkRequest(stall_after=stall_after)
    peer.send(call_header(fr.TEST, 4, T.CALL, serial, S.OK), request.SerializeToString())
    credit = await peer.recv_where(lambda f: f.header.type == T.CREDIT and f.header.serial == serial)
    return fr.decode_grant(credit.payload)


async def test_raw_credit_overrun_aborts_only_that_stream(node: Node) -> None:
    peer = await RawPeer.unix(node.unix)
    grant = await _sink_with_credit(peer, 1, stall_after=1)  # drains nothing: no more credit
    chunk = 200_000
    for _ in range(grant // (chunk + fr.HEADER_SIZE) + 1):  # one frame beyond the grant
        peer.send(call_header(fr.TEST, 4, T.STREAM, 1, S.CONTINUE), b"z" * chunk)
    reply = await peer.recv_where(lambda f: f.header.type == T.REPLY and f.header.serial == 1)
    body = error_body(reply.payload)
    assert reply.header.status == S.ERROR
    assert (body.code, body.side) == (fc.ErrorCode.PROTOCOL_VIOLATION, fc.Side.SERVER)
    peer.send(call_header(fr.TEST, 4, T.STREAM, 1, S.ERROR), fc.AbortedError("closing").to_body().SerializeToString())
    peer.send(call_header(fr.TEST, 1, T.CALL, 2, S.OK), test_pb2.EchoRequest(payload=b"up").SerializeToString())
    echo = await peer.recv_where(lambda f: f.header.type == T.REPLY and f.header.serial == 2)
    reply_body = test_pb2.EchoReply()
    reply_body.ParseFromString(echo.payload)
    assert echo.header.status == S.OK and reply_body.payload == b"up"
    await peer.close()


async def test_raw_credit_overrun_is_reported_on_the_stream_layer(node: Node) -> None:
    """PROTOCOL.md 6.2: credit and chunk violations are layer STREAM."""
    peer = await RawPeer.unix(node.unix)
    grant = await _sink_with_credit(peer, 1, stall_after=1)
    for _ in range(grant // 200_028 + 1):
        peer.send(call_header(fr.TEST, 4, T.STREAM, 1, S.CONTINUE), b"z" * 200_000)
    reply = await peer.recv_where(lambda f: f.header.type == T.REPLY and f.header.serial == 1)
    assert error_body(reply.payload).code == fc.ErrorCode.PROTOCOL_VIOLATION
    await peer.close()
    assert error_body(reply.payload).layer == fc.Layer.STREAM


async def test_raw_chunk_over_max_chunk_and_empty_chunk_are_violations(node: Node) -> None:
    peer = await RawPeer.unix(node.unix)
    await _sink_with_credit(peer, 1)
    peer.send(call_header(fr.TEST, 4, T.STREAM, 1, S.CONTINUE), b"q" * (256 * 1024 + 1))
    reply = await peer.recv_where(lambda f: f.header.type == T.REPLY and f.header.serial == 1)
    body = error_body(reply.payload)
    assert (body.code, body.layer) == (fc.ErrorCode.PROTOCOL_VIOLATION, fc.Layer.STREAM)
    await _sink_with_credit(peer, 3)
    peer.send(call_header(fr.TEST, 4, T.STREAM, 3, S.CONTINUE), b"")
    reply = await peer.recv_where(lambda f: f.header.type == T.REPLY and f.header.serial == 3)
    body = error_body(reply.payload)
    assert (body.code, body.layer) == (fc.ErrorCode.PROTOCOL_VIOLATION, fc.Layer.STREAM)
    await peer.close()


async def test_raw_data_before_the_first_credit_and_a_bad_hole(node: Node) -> None:
    peer = await RawPeer.unix(node.unix)
    await _sink_with_credit(peer, 1)
    peer.send(call_header(fr.TEST, 4, T.STREAM_HOLE, 1, S.CONTINUE), b"\0" * 11)
    reply = await peer.recv_where(lambda f: f.header.type == T.REPLY and f.header.serial == 1)
    assert error_body(reply.payload).code == fc.ErrorCode.PROTOCOL_VIOLATION
    await peer.close()


# -- a fake server: what this client does with a server that breaks section 7 ------------


async def test_the_client_aborts_a_stream_the_server_overruns(tmp_path: Path) -> None:
    path = str(tmp_path / "fake.sock")
    seen: list[fr.Frame] = []
    done = asyncio.Event()

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        call = await peer.recv_where(lambda f: f.header.type == T.CALL)
        credit = await peer.recv_where(lambda f: f.header.type == T.CREDIT)
        window = fr.decode_grant(credit.payload)
        s = call.header.serial
        for _ in range(window // 1028 + 1):
            peer.send(call_header(fr.TEST, 5, T.STREAM, s, S.CONTINUE), b"o" * 1000)
        seen.append(await peer.recv_where(lambda f: f.header.type == T.STREAM))
        peer.send(call_header(fr.TEST, 5, T.REPLY, s, S.ERROR), fc.AbortedError("ok").to_body().SerializeToString())
        done.set()
        await reader.read()

    server = await asyncio.start_unix_server(fake, path)
    async with server:
        conn = await fc.connect(f"unix://{path}", options=fc.Options(stream_window=4096))
        source = TestClient(conn).source(1)
        with pytest.raises(fc.ProtocolViolationError) as caught:
            async for _ in source:
                pass
        assert caught.value.side == fc.Side.CLIENT
        await asyncio.wait_for(done.wait(), WAIT)
        assert seen[0].header.status == S.ERROR
        assert error_body(seen[0].payload).code == fc.ErrorCode.PROTOCOL_VIOLATION
        with pytest.raises(fc.AbortedError):
            await source.result()
        assert conn.open_serials == []
        await conn.aclose()


async def test_result_before_the_end_of_a_download_is_refused_locally(conn: Connection) -> None:
    source = TestClient(conn).source(10_000_000)
    with pytest.raises(RuntimeError):
        await source.result()
    assert isinstance(await source.abort(), fc.CancelledError)
    assert conn.open_serials == []


@pytest.mark.parametrize("size", [0, 40, fr.MAX_TRAILER, fr.MAX_TRAILER + 1])
async def test_the_trailer_of_a_servers_finish(tmp_path: Path, size: int) -> None:
    """Section 7.6: a finish may carry up to 4096 bytes, which the stream exposes; the receiver
    checks the size whichever side sent it, and our confirmation carries no trailer."""
    path = str(tmp_path / "fake.sock")
    seen: list[fr.Frame] = []
    done = asyncio.Event()

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        call = await peer.recv_where(lambda f: f.header.type == T.CALL)
        s = call.header.serial
        peer.send(call_header(fr.TEST, 5, T.STREAM, s, S.CONTINUE), b"data")
        peer.send(call_header(fr.TEST, 5, T.STREAM, s, S.OK), b"t" * size)
        seen.append(await peer.recv_where(lambda f: f.header.type == T.STREAM))
        if seen[0].header.status == S.OK:
            reply = test_pb2.SourceReply(bytes=4).SerializeToString()
            peer.send(call_header(fr.TEST, 5, T.REPLY, s, S.OK), reply)
        else:
            peer.send(call_header(fr.TEST, 5, T.REPLY, s, S.ERROR), fc.AbortedError("ok").to_body().SerializeToString())
        done.set()
        await reader.read()

    server = await asyncio.start_unix_server(fake, path)
    async with server:
        conn = await fc.connect(f"unix://{path}")
        source = TestClient(conn).source(4)
        if size <= fr.MAX_TRAILER:
            assert [chunk async for chunk in source] == [b"data"]
            assert source.trailer == b"t" * size
            assert (await source.result()).bytes == 4
            await asyncio.wait_for(done.wait(), WAIT)
            assert (seen[0].header.status, seen[0].payload) == (S.OK, b"")
        else:
            with pytest.raises(fc.ProtocolViolationError) as caught:
                async for _ in source:
                    pass
            assert (caught.value.side, caught.value.layer) == (fc.Side.CLIENT, fc.Layer.STREAM)
            await asyncio.wait_for(done.wait(), WAIT)
            assert seen[0].header.status == S.ERROR
            assert error_body(seen[0].payload).code == fc.ErrorCode.PROTOCOL_VIOLATION
            assert source.trailer == b""
            with pytest.raises(fc.AbortedError):
                await source.result()
        assert conn.open_serials == []
        await conn.aclose()


async def test_a_bidirectional_finish_carries_our_trailer(conn: Connection) -> None:
    rec = record(conn)
    stream = TestClient(conn).echo_stream()
    await stream.send(b"ping")
    stream.close_send(b"vouched")  # the test program ignores it; it is on the wire
    assert [chunk async for chunk in stream] == [b"ping"]
    assert (await stream.result()).bytes == 4
    oks = [f.payload for d, f in rec.serial(stream.serial)
           if d == "tx" and f.header.type == T.STREAM and f.header.status == S.OK]
    assert oks == [b"vouched", b""]  # our finish with its trailer, then the confirmation
