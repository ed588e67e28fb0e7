"""Section 9 and framing errors on the wire: keepalive, shutdown, GOAWAY."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

import ferry_client as fc
from ferry_client import AdminClient, TestClient
from ferry_client import frame as fr
from ferry_client.frame import MessageType as T, Status as S
from ferry_client.pb import test_pb2
from support import WAIT, Node, RawPeer, call_header, error_body, record


async def until(conn: fc.Connection, pred: object, timeout: float = WAIT) -> None:
    assert callable(pred)
    async with asyncio.timeout(timeout):
        while not pred():
            if conn.closed:
                raise AssertionError(f"closed first: {await conn.wait_closed()}")
            await conn.wait_changed()


async def test_server_pings_are_answered_so_a_quiet_client_stays_connected(tmp_path: Path) -> None:
    # Keepalive every second, dead after one silent interval: a client that did not answer
    # PINGs would be gone after about 3 s, before its third PING.
    node = Node(tmp_path / "n", "[limits]\nkeepalive_interval_secs = 1\nkeepalive_count = 1\n")
    try:
        conn = await node.connect(options=fc.Options(keepalive_interval=0))
        rec = record(conn)
        await until(conn, lambda: conn.pings_received >= 3)
        pongs = rec.find("tx", lambda f: f.header.program == fr.KEEPALIVE and f.header.procedure == 2)
        assert len(pongs) >= 3 and all(p.header.serial == 0 and p.payload == b"" for p in pongs)
        assert not conn.closed
        assert await TestClient(conn).echo(b"alive") == b"alive"
        await conn.aclose()
    finally:
        node.stop()


async def test_our_ping_gets_a_pong(conn: fc.Connection) -> None:
    conn.ping()
    await until(conn, lambda: conn.pongs_received == 1)


async def test_keepalive_detects_a_frozen_server(node: Node) -> None:
    conn = await node.connect(options=fc.Options(keepalive_interval=0.2, keepalive_count=2))
    rec = record(conn)
    sleeping = asyncio.create_task(TestClient(conn).sleep(60_000))
    await rec.wait_for("tx", lambda f: f.header.type == T.CALL)
    node.signal(signal.SIGSTOP)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(fc.ConnectionLostError) as caught:
            await asyncio.wait_for(sleeping, WAIT)
        took = asyncio.get_running_loop().time() - started
        assert "keepalive" in caught.value.message
        assert took < 0.2 * (2 + 2) + 1.0  # within interval x (count + 2), with slack
        pings = rec.find("tx", lambda f: f.header.program == fr.KEEPALIVE and f.header.procedure == 1)
        assert len(pings) == 2
        assert conn.closed and conn.open_serials == []
    finally:
        node.signal(signal.SIGCONT)


async def test_sigterm_drains_calls_then_goaway_shutting_down(node: Node) -> None:
    conn = await node.connect()
    rec = record(conn)
    test = TestClient(conn)
    # ferryd installs its SIGTERM handler just after printing its ready line: a served call
    # first makes sure the signal does not arrive in between (it would kill it outright).
    assert await test.echo(b"up") == b"up"
    # An upload the node has accepted (its first CREDIT) is a call in flight at the signal.
    sink = test.sink()
    await sink.wait_credit(fr.HEADER_SIZE + 1)
    node.signal(signal.SIGTERM)
    await until(conn, lambda: conn.shutdown is not None)
    assert conn.shutdown is not None and conn.shutdown.drain_millis > 0
    with pytest.raises(fc.ShuttingDownError):
        await test.echo(b"new calls fail locally")
    await sink.send(b"the call in flight still finishes")
    assert (await sink.finish()).bytes == 33
    why = await asyncio.wait_for(conn.wait_closed(), WAIT)
    assert conn.goaway is not None and conn.goaway.code == fc.ErrorCode.SHUTTING_DOWN
    assert isinstance(why, fc.ConnectionLostError) and "SHUTTING_DOWN" in why.message
    goaway = rec.find("rx", lambda f: f.header.program == fr.CONTROL and f.header.procedure == 2)
    assert goaway[0].header.type == T.MESSAGE and goaway[0].header.status == S.ERROR
    assert node.proc.wait(WAIT) == 0


async def test_calls_open_at_close_fail_with_connection_lost(node: Node) -> None:
    conn = await node.connect()
    rec = record(conn)
    slow = asyncio.create_task(TestClient(conn).sleep(60_000))
    await rec.wait_for("tx", lambda f: f.header.type == T.CALL)
    node.proc.kill()
    with pytest.raises(fc.ConnectionLostError):
        await asyncio.wait_for(slow, WAIT)
    with pytest.raises(fc.ConnectionLostError):
        await TestClient(conn).echo(b"x")


async def test_admin_disconnect_sends_goaway_aborted(node: Node) -> None:
    victim = await node.connect()
    assert await TestClient(victim).echo(b"here") == b"here"  # the node has accepted it
    admin_conn = await node.connect()
    admin = AdminClient(admin_conn)
    clients = await admin.clients()
    assert len(clients) == 2
    info = await admin.info()
    assert info.connections_open == 2 and info.max_chunk == 256 * 1024
    target = min(c.id for c in clients)  # the first connection is the victim
    await admin.disconnect(target)
    await asyncio.wait_for(victim.wait_closed(), WAIT)
    assert victim.goaway is not None and victim.goaway.code == fc.ErrorCode.ABORTED
    assert len(await admin.clients()) == 1
    await admin_conn.aclose()


@pytest.mark.parametrize(
    "frame",
    [
        bytes.fromhex("0000001b74657374000000010000000100000000000000010000000000"),  # length 27
        bytes.fromhex("0000001c7465737400000001000000010000000400000001 00000000".replace(" ", "")),  # type 4
        bytes.fromhex("0000001c74657374000000010000000100000000000000010000000a"),  # status 10
        bytes.fromhex("7fffffff74657374000000010000000100000000000000010000000000"),  # over max frame
        fr.encode(call_header(fr.TEST, 1, T.CALL, 0, S.OK), b""),  # a CALL on serial 0
    ],
    ids=["length-too-small", "unknown-type", "unknown-status", "frame-too-large", "call-on-serial-0"],
)
async def test_framing_errors_get_goaway_protocol_violation_and_close(node: Node, frame: bytes) -> None:
    peer = await RawPeer.unix(node.unix)
    peer.send_raw(frame)
    goaway = await peer.recv_where(lambda f: f.header.program == fr.CONTROL)
    assert (goaway.header.type, goaway.header.status, goaway.header.procedure) == (T.MESSAGE, S.ERROR, 2)
    body = error_body(goaway.payload)
    assert (body.code, body.layer) == (fc.ErrorCode.PROTOCOL_VIOLATION, fc.Layer.CONNECTION)
    assert await peer.recv() is None  # closed: nothing follows the GOAWAY
    await peer.close()


async def test_eof_inside_a_frame_is_a_protocol_violation(node: Node) -> None:
    peer = await RawPeer.unix(node.unix)
    whole = fr.encode(call_header(fr.TEST, 1, T.CALL, 1, S.OK), test_pb2.EchoRequest(payload=b"abc").SerializeToString())
    peer.send_raw(whole[:-2])
    peer.writer.write_eof()
    goaway = await peer.recv_where(lambda f: f.header.program == fr.CONTROL)
    assert error_body(goaway.payload).code == fc.ErrorCode.PROTOCOL_VIOLATION
    await peer.close()


async def test_frames_for_unknown_serials_are_ignored_and_the_connection_stays(node: Node) -> None:
    peer = await RawPeer.unix(node.unix)
    for type_, status in [(T.CANCEL, S.OK), (T.CREDIT, S.OK), (T.STREAM, S.OK), (T.STREAM, S.ERROR), (T.STREAM, S.CONTINUE)]:
        payload = fr.encode_grant(1) if type_ == T.CREDIT else (b"d" if status == S.CONTINUE else b"")
        peer.send(call_header(fr.TEST, 4, type_, 77, status), payload)
    peer.send(call_header(fr.TEST, 1, T.CALL, 1, S.OK), test_pb2.EchoRequest(payload=b"k").SerializeToString())
    reply = await peer.recv_where(lambda f: f.header.type == T.REPLY)
    assert reply.header.serial == 1 and reply.header.status == S.OK
    await peer.close()


async def test_a_client_goaway_closes_the_connection(conn: fc.Connection) -> None:
    conn.send_goaway(fc.ErrorCode.CANCELLED, "bye")
    why = await asyncio.wait_for(conn.wait_closed(), WAIT)
    assert isinstance(why, fc.ConnectionLostError)


async def test_the_client_answers_a_framing_error_from_the_server_with_goaway(tmp_path: Path) -> None:
    path = str(tmp_path / "bad.sock")
    got: list[fr.Frame | None] = []
    finished = asyncio.Event()

    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        await peer.recv_where(lambda f: f.header.type == T.CALL)
        peer.send_raw(bytes.fromhex("00000005" + "00" * 24))  # a header saying length 5
        got.append(await peer.recv_where(lambda f: f.header.program == fr.CONTROL))
        got.append(await peer.recv())
        finished.set()

    server = await asyncio.start_unix_server(bad, path)
    async with server:
        conn = await fc.connect(f"unix://{path}")
        with pytest.raises(fc.ConnectionLostError) as caught:
            await TestClient(conn).echo(b"x")
        assert "framing error" in caught.value.message
        await asyncio.wait_for(finished.wait(), WAIT)
        goaway = got[0]
        assert goaway is not None and error_body(goaway.payload).code == fc.ErrorCode.PROTOCOL_VIOLATION
        assert got[1] is None


async def test_our_keepalive_pings_a_quiet_server_and_its_pongs_keep_us_alive(node: Node) -> None:
    conn = await node.connect(options=fc.Options(keepalive_interval=0.1, keepalive_count=1))
    await until(conn, lambda: conn.pongs_received >= 10)
    assert not conn.closed
    assert await TestClient(conn).echo(b"alive") == b"alive"
    await conn.aclose()
