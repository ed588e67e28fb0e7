"""The test program (0x74657374 "test", version 1; actors/proto/ferry/test/v1): a conformance
target that ferryd serves by default (docs/PROTOCOL.md section 6.1)."""

from __future__ import annotations

from . import frame as fr
from .connection import Connection, Direction, EventCall, Stream
from .pb import test_pb2 as pb

ECHO, SLEEP, FAIL, SINK, SOURCE, ECHO_STREAM, TICKS = range(1, 8)
TICK = 100


class TestClient:
    __test__ = False  # not a pytest class

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def echo(self, payload: bytes, *, timeout: float | None = None) -> bytes:
        reply = await self.conn.call(fr.TEST, 1, ECHO, pb.EchoRequest(payload=payload), pb.EchoReply, timeout=timeout)
        return reply.payload

    async def sleep(self, millis: int, *, timeout: float | None = None) -> int:
        reply = await self.conn.call(fr.TEST, 1, SLEEP, pb.SleepRequest(millis=millis), pb.SleepReply, timeout=timeout)
        return reply.slept_millis

    async def fail(self, code: int, message: str) -> None:
        await self.conn.call(fr.TEST, 1, FAIL, pb.FailRequest(code=code, message=message), pb.FailReply)

    def sink(self, stall_after: int = 0) -> Stream[pb.SinkReply]:
        return self.conn.stream(fr.TEST, 1, SINK, pb.SinkRequest(stall_after=stall_after), pb.SinkReply, Direction.UPLOAD)

    def source(
        self, length: int, *, data_run: int = 0, hole_run: int = 0, chunk: int = 0, fail_after: int = 0
    ) -> Stream[pb.SourceReply]:
        request = pb.SourceRequest(
            length=length, data_run=data_run, hole_run=hole_run, chunk=chunk, fail_after=fail_after
        )
        return self.conn.stream(fr.TEST, 1, SOURCE, request, pb.SourceReply, Direction.DOWNLOAD)

    def echo_stream(self) -> Stream[pb.EchoStreamReply]:
        return self.conn.stream(fr.TEST, 1, ECHO_STREAM, pb.EchoStreamRequest(), pb.EchoStreamReply, Direction.BOTH)

    def ticks(self, count: int) -> EventCall[pb.Tick, pb.TicksReply]:
        return self.conn.call_with_events(fr.TEST, 1, TICKS, pb.TicksRequest(count=count), pb.TicksReply, pb.Tick)
