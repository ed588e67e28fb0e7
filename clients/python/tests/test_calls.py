"""Sections 5 and 7.1-7.3 on the wire: calls in flight out of order, deadlines, cancel, events."""

from __future__ import annotations

import asyncio

import pytest

import ferry_client as fc
from ferry_client import Connection, TestClient
from ferry_client import frame as fr
from ferry_client.frame import MessageType as T, Status as S
from ferry_client.pb import test_pb2
from support import WAIT, error_body, record


async def test_replies_come_in_the_order_calls_finish(conn: Connection) -> None:
    rec = record(conn)
    test = TestClient(conn)
    sleep = asyncio.create_task(test.sleep(300))
    echo = asyncio.create_task(test.echo(b"quick"))
    done, _ = await asyncio.wait([sleep, echo], return_when=asyncio.FIRST_COMPLETED)
    assert done == {echo}
    assert await echo == b"quick"
    assert await sleep >= 300
    calls = rec.find("tx", lambda f: f.header.type == T.CALL)
    replies = rec.find("rx", lambda f: f.header.type == T.REPLY)
    assert [c.header.serial for c in calls] == [1, 2]
    assert [r.header.serial for r in replies] == [2, 1]  # out of order, routed by serial
    assert conn.open_serials == []


async def test_many_calls_in_flight_each_get_their_own_reply(conn: Connection) -> None:
    test = TestClient(conn)
    payloads = [str(i).encode() * (i % 7 + 1) for i in range(200)]
    replies = await asyncio.gather(*(test.echo(p) for p in payloads))
    assert replies == payloads
    assert conn.open_serials == []


async def test_a_deadline_sends_cancel_and_keeps_the_serial_until_the_reply(conn: Connection) -> None:
    rec = record(conn)
    with pytest.raises(fc.DeadlineExceededError) as caught:
        await TestClient(conn).sleep(60_000, timeout=0.2)
    assert (caught.value.side, caught.value.layer) == (fc.Side.CLIENT, fc.Layer.CALL)
    cancel = rec.find("tx", lambda f: f.header.type == T.CANCEL)
    assert len(cancel) == 1 and cancel[0].header.serial == 1
    assert cancel[0].header.procedure == 2 and cancel[0].payload == b""
    reply = await rec.wait_for("rx", lambda f: f.header.type == T.REPLY and f.header.serial == 1)
    body = error_body(reply.payload)
    assert reply.header.status == S.ERROR
    assert (body.code, body.side, body.layer) == (10, 1, 2)  # CANCELLED, CLIENT, CALL
    assert conn.open_serials == []


async def test_cancelling_the_awaiting_task_sends_cancel(conn: Connection) -> None:
    rec = record(conn)
    task = asyncio.create_task(TestClient(conn).sleep(60_000))
    await rec.wait_for("tx", lambda f: f.header.type == T.CALL)
    assert conn.open_serials == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rec.find("tx", lambda f: f.header.type == T.CANCEL and f.header.serial == 1)
    assert conn.open_serials == [1]  # reserved until the REPLY (section 7.3)
    reply = await rec.wait_for("rx", lambda f: f.header.type == T.REPLY)
    assert error_body(reply.payload).code == 10
    assert conn.open_serials == []
    # The next call does not reuse a serial still open and the connection is fine.
    assert await TestClient(conn).echo(b"after") == b"after"


async def test_serials_skip_those_still_open(conn: Connection) -> None:
    rec = record(conn)
    test = TestClient(conn)
    slow = asyncio.create_task(test.sleep(500))
    await rec.wait_for("tx", lambda f: f.header.type == T.CALL)
    conn._next_serial = 1  # force a wrap onto the open serial 1
    assert await test.echo(b"x") == b"x"
    serials = [f.header.serial for f in rec.find("tx", lambda f: f.header.type == T.CALL)]
    assert serials == [1, 2]
    assert await slow >= 500


async def test_events_bound_to_a_call_arrive_in_order_then_the_reply(conn: Connection) -> None:
    rec = record(conn)
    ticks = TestClient(conn).ticks(5)
    got = [tick.n async for tick in ticks]
    assert got == [0, 1, 2, 3, 4]
    reply = await ticks
    assert reply.sent == 5
    events = rec.find("rx", lambda f: f.header.type == T.MESSAGE and f.header.serial == ticks.serial)
    assert [e.header.procedure for e in events] == [100] * 5
    assert conn.open_serials == []


async def test_a_call_on_an_open_serial_is_refused_and_the_original_left_alone(conn: Connection) -> None:
    rec = record(conn)
    slow = asyncio.create_task(TestClient(conn).sleep(300))
    await rec.wait_for("tx", lambda f: f.header.type == T.CALL)
    # Raw duplicate CALL on serial 1, bypassing the serial allocator.
    conn._write(fr.encode(fr.Header(fr.TEST, 1, 1, T.CALL, 1, S.OK), test_pb2.EchoRequest().SerializeToString()))
    first = await rec.wait_for("rx", lambda f: f.header.type == T.REPLY and f.header.serial == 1)
    assert first.header.status == S.ERROR and error_body(first.payload).code == 12
    # Our call got that refusal as its reply; the server's original SLEEP still replies later
    # (discarded: the serial was freed). The connection stays up.
    with pytest.raises(fc.ProtocolViolationError):
        await slow
    assert await TestClient(conn).echo(b"still up") == b"still up"


async def test_a_reply_error_after_a_wait_keeps_the_connection(conn: Connection) -> None:
    test = TestClient(conn)
    with pytest.raises(fc.NotFoundError):
        await test.fail(5, "x")
    assert await asyncio.wait_for(test.echo(b"y"), WAIT) == b"y"
