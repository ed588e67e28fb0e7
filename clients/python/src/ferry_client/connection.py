"""An asyncio Ferry connection (docs/PROTOCOL.md sections 5, 7 and 9).

One reader, the connection's protocol object, takes every byte the transport delivers, cuts it
into frames and routes each by serial: REPLY, STREAM, STREAM_HOLE, CREDIT and call-bound
MESSAGE frames to their call; keepalive PINGs are answered with a PONG at once; SHUTDOWN and
GOAWAY are recorded; events on serial 0 go to the connection's subscribers. Calls, streams and
events are awaited by the caller's tasks, never by the reader, so a slow consumer stalls only
its own stream.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
import ssl
import struct
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Generic, TypeVar
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError, Message

from . import frame as fr
from .errors import (
    AbortedError,
    CancelledError,
    ConnectionLostError,
    DeadlineExceededError,
    ErrorCode,
    FerryError,
    Layer,
    ProtocolViolationError,
    ShuttingDownError,
    Side,
    error_from_payload,
    make_error,
)
from .pb import wire_pb2

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
E = TypeVar("E", bound=Message)

_HEADER_UNPACK = struct.Struct(">IIIIIII").unpack_from
_HOLE_UNPACK = fr.HOLE.unpack
_GRANT_UNPACK = fr.GRANT.unpack
_MIN_READ = 256 * 1024
"""The reader's buffer: large enough for a whole default chunk frame and the next header."""
_READ_AHEAD = 1024 * 1024
"""At most this much is reserved beyond the bytes that arrived (section 2)."""


class Direction(enum.Enum):
    """Section 7.4."""

    UNARY = "unary"
    UPLOAD = "upload"
    DOWNLOAD = "download"
    BOTH = "both"

    @property
    def sends(self) -> bool:
        return self in (Direction.UPLOAD, Direction.BOTH)

    @property
    def receives(self) -> bool:
        return self in (Direction.DOWNLOAD, Direction.BOTH)


@dataclass(frozen=True, slots=True)
class Hole:
    """`length` zero bytes in stream data (STREAM_HOLE)."""

    length: int


Chunk = bytes | Hole


@dataclass(frozen=True, slots=True)
class Event:
    """A MESSAGE/OK event (section 6.3): emitting program, event number, protobuf payload."""

    program: int
    number: int
    serial: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Options:
    """A connection's settings (client side)."""

    max_frame: int = fr.DEFAULT_MAX_FRAME
    max_chunk: int = fr.DEFAULT_MAX_CHUNK
    """The largest data chunk this client sends and accepts."""
    stream_window: int = fr.DEFAULT_STREAM_WINDOW
    """Credit this client grants each download stream."""
    keepalive_interval: float = 5.0
    """Seconds of silence before a PING; 0 turns this client's keepalive off."""
    keepalive_count: int = 5
    write_buffer: int = 4 * 1024 * 1024
    """Stream data queued in the transport before senders wait."""


def _local_error(cls: type[FerryError], message: str, layer: Layer) -> FerryError:
    return cls(message, side=Side.CLIENT, layer=layer)


def _body(code: ErrorCode, message: str, layer: Layer = Layer.STREAM) -> bytes:
    return wire_pb2.ErrorBody(
        code=int(code),  # type: ignore[arg-type]
        message=message,
        side=int(Side.CLIENT),  # type: ignore[arg-type]
        layer=int(layer),  # type: ignore[arg-type]
    ).SerializeToString()


_Reply = tuple[fr.Status, bytes] | FerryError


class _Call:
    """The client's state of one open serial."""

    __slots__ = (
        "conn",
        "serial",
        "program",
        "version",
        "procedure",
        "direction",
        "reply",
        "replied",
        "last_sent",
        "events",
        "event_waiter",
        "out_open",
        "out_credit",
        "out_waiter",
        "out_error",
        "in_chunks",
        "in_waiter",
        "in_granted",
        "in_consumed",
        "in_finished",
        "in_trailer",
        "in_error",
        "aborted",
        "finish_sent",
        "confirm_pending",
    )

    def __init__(
        self,
        conn: Connection,
        serial: int,
        program: int,
        version: int,
        procedure: int,
        direction: Direction,
        events: bool,
    ) -> None:
        self.conn = conn
        self.serial = serial
        self.program = program
        self.version = version
        self.procedure = procedure
        self.direction = direction
        self.reply: asyncio.Future[_Reply] = conn._loop.create_future()
        self.replied = False
        self.last_sent = direction is Direction.UNARY
        self.events: collections.deque[Event] | None = collections.deque() if events else None
        self.event_waiter: asyncio.Future[None] | None = None
        # Our sending side (upload, both).
        self.out_open = direction.sends
        self.out_credit = 0
        self.out_waiter: asyncio.Future[None] | None = None
        self.out_error: FerryError | None = None
        # Our receiving side (download, both).
        self.in_chunks: collections.deque[Chunk] = collections.deque()
        self.in_waiter: asyncio.Future[None] | None = None
        self.in_granted = 0
        self.in_consumed = 0
        self.in_finished = False
        self.in_trailer = b""
        self.in_error: FerryError | None = None
        self.aborted = False
        self.finish_sent = False
        self.confirm_pending = False

    # -- sending frames of this call ------------------------------------------------------

    def header(self, type_: fr.MessageType, status: fr.Status, payload_len: int) -> bytes:
        return fr.encode_header(
            payload_len, self.program, self.version, self.procedure, type_, self.serial, status
        )

    def send_control(self, type_: fr.MessageType, status: fr.Status, payload: bytes = b"") -> None:
        self.conn._write(self.header(type_, status, len(payload)) + payload)

    def abort(self, code: ErrorCode, message: str) -> None:
        """Sends STREAM/ERROR: closes our side; every further frame of the serial is discarded."""
        if self.last_sent:
            return
        self.aborted = True
        self.out_open = False
        self.last_sent = True
        self.send_control(fr.MessageType.STREAM, fr.Status.ERROR, _body(code, message))
        self.wake()
        self.conn._maybe_free(self)

    def wake(self) -> None:
        for waiter in (self.out_waiter, self.in_waiter, self.event_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self.out_waiter = self.in_waiter = self.event_waiter = None

    def fail(self, error: FerryError) -> None:
        """The connection is gone: every waiter learns it."""
        if not self.reply.done():
            self.reply.set_result(error)
        self.replied = True
        self.last_sent = True
        self.out_open = False
        if self.in_error is None:
            self.in_error = error
        if self.out_error is None:
            self.out_error = error
        self.wake()

    # -- frames from the server -----------------------------------------------------------

    def on_reply(self, status: fr.Status, payload: bytes) -> None:
        self.replied = True
        if status is fr.Status.OK:
            result: _Reply = (status, payload)
        else:
            result = error_from_payload(payload)
        if not self.reply.done():
            self.reply.set_result(result)
        if not self.last_sent:
            # Section 5: the server ended the call while our side was open; close it.
            self.abort(ErrorCode.ABORTED, "the server ended the call")
        if isinstance(result, FerryError):
            if self.out_error is None:
                self.out_error = result
            if self.in_error is None and not self.in_finished:
                self.in_error = result
        elif self.out_error is None and self.out_open:
            self.out_error = AbortedError(
                "the server replied before the upload finished", side=Side.SERVER,
                layer=Layer.STREAM,
            )
        self.out_open = False
        self.wake()
        self.conn._maybe_free(self)

    def violation(self, message: str) -> None:
        """The server broke section 7 on this stream: abort it (section 8)."""
        error = _local_error(ProtocolViolationError, message, Layer.STREAM)
        self.in_error = self.in_error or error
        self.out_error = self.out_error or error
        self.abort(ErrorCode.PROTOCOL_VIOLATION, message)

    def on_data(self, payload: bytes) -> None:
        if self.aborted or self.replied:
            return
        if not self.direction.receives or self.in_finished:
            self.violation("stream data on a serial that receives none")
            return
        cost = fr.HEADER_SIZE + len(payload)
        if not payload:
            self.violation("empty data chunk")
            return
        if len(payload) > self.conn.options.max_chunk:
            self.violation(f"chunk of {len(payload)} bytes over max chunk")
            return
        if cost > self.in_granted:
            self.violation(f"frame of {cost} bytes beyond the {self.in_granted} of credit left")
            return
        self.in_granted -= cost
        self.in_chunks.append(payload)
        if self.in_waiter is not None:
            self.wake()

    def on_hole(self, payload: bytes) -> None:
        if self.aborted or self.replied:
            return
        if not self.direction.receives or self.in_finished:
            self.violation("a hole on a serial that receives none")
            return
        if len(payload) != fr.HOLE.size:
            self.violation(f"hole payload of {len(payload)} bytes")
            return
        if fr.HOLE_FRAME_SIZE > self.in_granted:
            self.violation("hole beyond credit")
            return
        self.in_granted -= fr.HOLE_FRAME_SIZE
        length, flags = _HOLE_UNPACK(payload)
        if flags & fr.HOLE_KEEP:
            # Bytes of a base this client does not have: never to be read as zeros.
            self.violation("a KEEP range (STREAM_HOLE flag 1) on a stream without a base")
            return
        self.in_chunks.append(Hole(int(length)))
        if self.in_waiter is not None:
            self.wake()

    def on_stream_end(self, status: fr.Status, payload: bytes) -> None:
        if self.aborted or self.replied:
            return
        if status is fr.Status.OK:
            if not self.direction.receives or self.in_finished:
                self.violation("an unexpected finish")
                return
            if len(payload) > fr.MAX_TRAILER:
                # Section 7.6: a receiver checks the trailer's size whichever side sent it.
                self.violation(f"a finish trailer of {len(payload)} bytes, over {fr.MAX_TRAILER}")
                return
            self.in_finished = True
            self.in_trailer = payload
        else:
            # A server STREAM/ERROR: its abort; the REPLY still follows (section 7.6).
            error = error_from_payload(payload)
            self.in_error = self.in_error or error
            self.out_error = self.out_error or error
        self.wake()

    def on_credit(self, payload: bytes) -> None:
        if self.aborted or self.replied:
            return
        if len(payload) != fr.GRANT.size:
            self.violation(f"credit payload of {len(payload)} bytes")
            return
        if not self.direction.sends:
            return
        self.out_credit = min(self.out_credit + int(_GRANT_UNPACK(payload)[0]), fr.MAX_CREDIT)
        if self.out_waiter is not None:
            self.wake()

    def on_event(self, event: Event) -> None:
        if self.events is not None:
            self.events.append(event)
            if self.event_waiter is not None:
                self.wake()


class _Reader(asyncio.BufferedProtocol):
    """Cuts the byte stream into frames and hands each to the connection, in order."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.buf = bytearray(_MIN_READ + _READ_AHEAD)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.need = fr.HEADER_SIZE
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn._connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        room = len(self.buf) - self.end
        if room < 64 * 1024 or room < self.need - (self.end - self.start):
            self._make_room()
        return self.view[self.end :]

    def _make_room(self) -> None:
        have = self.end - self.start
        size = max(_MIN_READ + _READ_AHEAD, min(self.need, have + _READ_AHEAD) + 64 * 1024)
        if size > len(self.buf):
            new = bytearray(size)
            new[:have] = self.view[self.start : self.end]
            self.view.release()
            self.buf = new
            self.view = memoryview(new)
        else:
            self.buf[:have] = self.view[self.start : self.end]
        self.start, self.end = 0, have

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.conn._last_rx = self.conn._loop.time()
        if self.broken:
            return
        conn = self.conn
        view = self.view
        max_frame = conn.options.max_frame
        start, end = self.start, self.end
        try:
            while end - start >= fr.HEADER_SIZE:
                length, program, version, procedure, type_, serial, status = _HEADER_UNPACK(
                    view, start
                )
                fr.check_header(length, type_, status, max_frame)
                if end - start < length:
                    self.need = length
                    break
                payload = bytes(view[start + fr.HEADER_SIZE : start + length])
                start += length
                self.need = fr.HEADER_SIZE
                conn._dispatch(program, version, procedure, type_, serial, status, payload)
        except fr.FramingError as error:
            self.broken = True
            conn._framing_error(error)
            return
        if start == end:
            start = end = 0
        self.start, self.end = start, end

    def eof_received(self) -> bool | None:
        if self.end > self.start and not self.broken:
            self.conn._framing_error(
                fr.FramingError("UnexpectedEof", "the server closed inside a frame")
            )
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn._write_paused = True

    def resume_writing(self) -> None:
        self.conn._write_paused = False
        waiter = self.conn._drain_waiter
        self.conn._drain_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Connection:
    """A client connection to a Ferry node. Make one with `connect()` (or `Connection.open`)."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, _Call] = {}
        self._next_serial = 1
        self._last_rx = self._loop.time()
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._close_error: FerryError | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._subscribers: dict[tuple[int, int], list[Callable[[Event], None]]] = {}
        self.shutdown: wire_pb2.Shutdown | None = None
        """The server's SHUTDOWN notice (section 9.2), once it came."""
        self.goaway: FerryError | None = None
        """The error of the server's GOAWAY (section 9.3), once it came."""
        self.pings_received = 0
        self.pongs_received = 0
        self.identity: str | None = None
        self.role: int | None = None
        self._changed: asyncio.Future[None] | None = None
        self.trace: Callable[[str, fr.Frame], None] | None = None
        """When set, called with ("tx" or "rx", frame) for every frame sent and received:
        a wire tap for tests and debugging (it costs a decode per frame)."""

    # -- opening --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        uri: str,
        *,
        ca: str | os.PathLike[str] | None = None,
        server_hostname: str | None = None,
        user: str | None = None,
        password: str | None = None,
        options: Options | None = None,
    ) -> Connection:
        """Connects to `unix:///path`, `tcp://host:port` or `tls://host:port`.

        TLS verifies the server's certificate against the CA file `ca` (only that CA) and the
        host name dialled (or `server_hostname`). With `user`, authenticates with SCRAM-SHA-256.
        """
        conn = cls(options)
        parts = urlsplit(uri)
        loop = conn._loop
        if parts.scheme == "unix":
            await loop.create_unix_connection(lambda: _Reader(conn), parts.path)
        elif parts.scheme in ("tcp", "tls"):
            if parts.hostname is None or parts.port is None:
                raise ValueError(f"{uri!r}: expected {parts.scheme}://host:port")
            context: ssl.SSLContext | None = None
            if parts.scheme == "tls":
                if ca is None:
                    raise ValueError("tls:// needs the CA certificate (ca=...)")
                context = tls_context(ca)
            await loop.create_connection(
                lambda: _Reader(conn),
                parts.hostname,
                parts.port,
                ssl=context,
                server_hostname=(server_hostname or parts.hostname) if context else None,
            )
        else:
            raise ValueError(f"{uri!r}: the scheme must be unix, tcp or tls")
        if user is not None:
            if password is None:
                raise ValueError("a user needs a password")
            try:
                await conn.authenticate(user, password)
            except BaseException:
                conn.close()
                raise
        return conn

    def _connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=self.options.write_buffer)
        self._last_rx = self._loop.time()
        if self.options.keepalive_interval > 0:
            self._keepalive_task = self._loop.create_task(self._keepalive())

    async def authenticate(self, user: str, password: str) -> None:
        """SCRAM-SHA-256 over the auth program (section 9.4); UnauthenticatedError if refused."""
        from .scram import authenticate

        reply = await authenticate(self, user, password)
        self.identity = reply.identity
        self.role = int(reply.role)

    # -- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> FerryError:
        """Waits until the connection is closed; returns why (a ConnectionLostError)."""
        await asyncio.shield(self._closed)
        assert self._close_error is not None
        return self._close_error

    async def wait_changed(self) -> None:
        """Waits until the connection's state changes: a PING, PONG, SHUTDOWN, GOAWAY, close."""
        if self._changed is None:
            self._changed = self._loop.create_future()
        await asyncio.shield(self._changed)

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    @property
    def open_serials(self) -> list[int]:
        """Serials still open on this side (section 5); for tests and diagnostics."""
        return sorted(self._calls)

    def close(self) -> None:
        """Closes the connection; open calls fail with CONNECTION_LOST."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def aclose(self) -> None:
        self.close()
        if self._transport is not None:
            await self.wait_closed()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def send_goaway(self, code: ErrorCode, message: str) -> None:
        """Tells the server why this client goes away (section 9.3); it then closes."""
        payload = _body(code, message, Layer.CONNECTION)
        self._write(
            fr.encode_header(
                len(payload), fr.CONTROL, 1, fr.CONTROL_GOAWAY, fr.MessageType.MESSAGE, 0,
                fr.Status.ERROR,
            )
            + payload
        )

    def ping(self) -> None:
        """Sends a keepalive PING now (the PONG counts in `pongs_received`)."""
        self._write(_PING)

    # -- writing ----------------------------------------------------------------------------

    def _write(self, data: bytes | bytearray) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self.trace is not None:
            view = memoryview(data)
            while len(view):
                frame, used = fr.decode(view, fr.MAX_CREDIT)
                self.trace("tx", frame)
                view = view[used:]
        transport.write(data)

    async def _drain(self) -> None:
        while self._write_paused and not self.closed:
            if self._drain_waiter is None or self._drain_waiter.done():
                self._drain_waiter = self._loop.create_future()
            waiters: list[asyncio.Future[None]] = [self._drain_waiter, self._closed]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)

    # -- calls ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed or self.goaway is not None:
            raise self._close_error or _local_error(
                ConnectionLostError,
                f"the server said GOAWAY: {self.goaway}" if self.goaway else "connection closed",
                Layer.CONNECTION,
            )
        if self.shutdown is not None:
            raise _local_error(
                ShuttingDownError,
                f"the server is shutting down ({self.shutdown.reason or 'no reason given'})",
                Layer.CONNECTION,
            )

    def _serial(self) -> int:
        serial = self._next_serial
        while serial in self._calls:
            serial = serial % 0xFFFFFFFF + 1
        self._next_serial = serial % 0xFFFFFFFF + 1
        return serial

    def start(
        self,
        program: int,
        version: int,
        procedure: int,
        request: Message | bytes,
        direction: Direction = Direction.UNARY,
        *,
        events: bool = False,
    ) -> _Call:
        """Sends a CALL and returns the open call (low level: use call(), stream(), ...)."""
        self._check_open()
        serial = self._serial()
        call = _Call(self, serial, program, version, procedure, direction, events)
        self._calls[serial] = call
        payload = request if isinstance(request, bytes) else request.SerializeToString()
        call.send_control(fr.MessageType.CALL, fr.Status.OK, payload)
        if direction.receives:
            # Section 7.5: for a download the client sends its first CREDIT right after the CALL.
            window = min(self.options.stream_window, fr.MAX_CREDIT)
            call.in_granted = window
            call.send_control(fr.MessageType.CREDIT, fr.Status.OK, fr.encode_grant(window))
        return call

    def _cancel(self, call: _Call) -> None:
        """Sends CANCEL (section 7.3) unless the call already ended; the serial stays reserved."""
        if not call.replied and not self.closed:
            call.send_control(fr.MessageType.CANCEL, fr.Status.OK)

    def _maybe_free(self, call: _Call) -> None:
        if call.replied and call.last_sent and self._calls.get(call.serial) is call:
            del self._calls[call.serial]

    async def call(
        self,
        program: int,
        version: int,
        procedure: int,
        request: Message,
        reply_type: type[R],
        *,
        timeout: float | None = None,
    ) -> R:
        """A unary call. With `timeout` (seconds), DeadlineExceededError once it passes (the
        call is cancelled on the server); cancelling the awaiting task sends CANCEL too."""
        call = self.start(program, version, procedure, request)
        payload = await self._await_reply(call, timeout)
        return _decode(reply_type, payload)

    async def _await_reply(self, call: _Call, timeout: float | None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                result = await asyncio.shield(call.reply)
        except TimeoutError:
            self._cancel(call)
            raise _local_error(
                DeadlineExceededError, f"no reply within {timeout} s", Layer.CALL
            ) from None
        except asyncio.CancelledError:
            self._cancel(call)
            raise
        if isinstance(result, FerryError):
            raise result
        return result[1]

    def call_with_events(
        self,
        program: int,
        version: int,
        procedure: int,
        request: Message,
        reply_type: type[R],
        event_type: type[E],
    ) -> EventCall[E, R]:
        """A unary call whose handler emits events bound to it (TICKS, MIGRATE, SUBSCRIBE)."""
        call = self.start(program, version, procedure, request, events=True)
        return EventCall(self, call, reply_type, event_type)

    def stream(
        self,
        program: int,
        version: int,
        procedure: int,
        request: Message,
        reply_type: type[R],
        direction: Direction,
    ) -> Stream[R]:
        """Opens a streaming call (upload, download or both)."""
        if direction is Direction.UNARY:
            raise ValueError("stream() is for streaming procedures")
        return Stream(self, self.start(program, version, procedure, request, direction), reply_type)

    def subscribe_events(self, program: int, number: int, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Calls `callback` for each event (program, number) on serial 0; returns an unsubscriber."""
        key = (program, number)
        self._subscribers.setdefault(key, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(key, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return unsubscribe

    # -- the reader's side ----------------------------------------------------------------

    def _dispatch(
        self,
        program: int,
        version: int,
        procedure: int,
        type_: int,
        serial: int,
        status: int,
        payload: bytes,
    ) -> None:
        if self.trace is not None:
            self.trace("rx", fr.Frame(fr.Header(
                program, version, procedure, fr.MessageType(type_), serial, fr.Status(status)
            ), payload))
        if serial == 0:
            self._connection_frame(program, procedure, type_, status, payload)
            return
        call = self._calls.get(serial)
        if call is None:
            return  # section 5: a frame for a serial we do not know is discarded
        if type_ == 3:  # STREAM
            if status == 2:
                call.on_data(payload)
            else:
                call.on_stream_end(fr.Status(status), payload)
        elif type_ == 7:  # CREDIT
            if status == 0:
                call.on_credit(payload)
        elif type_ == 1:  # REPLY
            if status == 2:
                call.violation("REPLY with status CONTINUE")
                return
            call.on_reply(fr.Status(status), payload)
        elif type_ == 6:  # STREAM_HOLE
            if status == 2:
                call.on_hole(payload)
        elif type_ == 2:  # MESSAGE: an event bound to the call
            if status == 0:
                call.on_event(Event(program, procedure, serial, payload))
        # CALL and CANCEL are never sent by a server: discarded.

    def _connection_frame(self, program: int, procedure: int, type_: int, status: int, payload: bytes) -> None:
        if type_ != fr.MessageType.MESSAGE:
            return
        if program == fr.KEEPALIVE:
            if procedure == fr.KEEPALIVE_PING:
                self.pings_received += 1
                self._write(_PONG)
            elif procedure == fr.KEEPALIVE_PONG:
                self.pongs_received += 1
            self._notify()
        elif program == fr.CONTROL:
            if procedure == fr.CONTROL_SHUTDOWN and status == fr.Status.OK:
                notice = wire_pb2.Shutdown()
                try:
                    notice.ParseFromString(payload)
                except DecodeError:
                    pass
                self.shutdown = notice
            elif procedure == fr.CONTROL_GOAWAY:
                self.goaway = error_from_payload(payload)
            self._notify()
        elif status == fr.Status.OK:
            event = Event(program, procedure, 0, payload)
            for callback in list(self._subscribers.get((program, procedure), [])):
                callback(event)

    def _framing_error(self, error: fr.FramingError) -> None:
        # Section 2: tell the server (best effort) and close.
        self.send_goaway(ErrorCode.PROTOCOL_VIOLATION, str(error))
        self._close_error = _local_error(
            ConnectionLostError, f"framing error from the server: {error}", Layer.CONNECTION
        )
        self.close()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._close_error is None:
            if self.goaway is not None:
                why = f"the server said GOAWAY {self.goaway.code.name}: {self.goaway.message}"
            elif exc is not None:
                why = f"connection lost: {exc}"
            else:
                why = "connection closed"
            self._close_error = _local_error(ConnectionLostError, why, Layer.CONNECTION)
        for call in list(self._calls.values()):
            call.fail(self._close_error)
        self._calls.clear()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        if not self._closed.done():
            self._closed.set_result(None)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._notify()

    async def _keepalive(self) -> None:
        """Section 9.1: a PING after each silent interval; dead after more than `count`."""
        interval = self.options.keepalive_interval
        silent = 0
        checked = self._loop.time()
        while not self.closed:
            await asyncio.sleep(interval)
            heard = self._last_rx >= checked  # anything received since the previous check
            checked = self._loop.time()
            if heard:
                silent = 0
                continue
            silent += 1
            if silent > self.options.keepalive_count:
                self._close_error = _local_error(
                    ConnectionLostError,
                    f"keepalive: the server was silent for {silent} intervals of {interval} s",
                    Layer.CONNECTION,
                )
                if self._transport is not None:
                    self._transport.abort()
                return
            self._write(_PING)


_PING = fr.encode_header(0, fr.KEEPALIVE, 1, fr.KEEPALIVE_PING, fr.MessageType.MESSAGE, 0, fr.Status.OK)
_PONG = fr.encode_header(0, fr.KEEPALIVE, 1, fr.KEEPALIVE_PONG, fr.MessageType.MESSAGE, 0, fr.Status.OK)


def tls_context(ca: str | os.PathLike[str]) -> ssl.SSLContext:
    """A client context trusting only the CA in `ca` (PEM), checking host names, TLS 1.2+."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _decode(reply_type: type[R], payload: bytes) -> R:
    message = reply_type()
    try:
        message.ParseFromString(payload)
    except DecodeError as error:
        raise _local_error(
            ProtocolViolationError, f"reply does not decode as {reply_type.__name__}: {error}",
            Layer.CALL,
        ) from None
    return message


async def connect(
    uri: str,
    *,
    ca: str | os.PathLike[str] | None = None,
    server_hostname: str | None = None,
    user: str | None = None,
    password: str | None = None,
    options: Options | None = None,
) -> Connection:
    """Connects to a node: `unix:///path`, `tcp://host:port` or `tls://host:port`."""
    return await Connection.open(
        uri, ca=ca, server_hostname=server_hostname, user=user, password=password, options=options
    )


class EventCall(Generic[E, R]):
    """A call that receives events until its REPLY: iterate it for events, await it for the
    reply. Leaving `async with` (or `cancel()`) cancels the call."""

    def __init__(self, conn: Connection, call: _Call, reply_type: type[R], event_type: type[E]) -> None:
        self._conn = conn
        self._call = call
        self._reply_type = reply_type
        self._event_type = event_type

    @property
    def serial(self) -> int:
        return self._call.serial

    def __aiter__(self) -> AsyncIterator[E]:
        return self._events()

    async def _events(self) -> AsyncIterator[E]:
        """The events in order; ends when the REPLY comes (raising its error if it failed)."""
        call = self._call
        assert call.events is not None
        while True:
            if call.events:
                event = call.events.popleft()
                yield _decode(self._event_type, event.payload)
                continue
            if call.reply.done():
                result = call.reply.result()
                if isinstance(result, FerryError):
                    raise result
                return
            call.event_waiter = self._conn._loop.create_future()
            waiters: list[asyncio.Future[Any]] = [call.event_waiter, call.reply]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)

    async def result(self, timeout: float | None = None) -> R:
        return _decode(self._reply_type, await self._conn._await_reply(self._call, timeout))

    def __await__(self) -> Any:
        return self.result().__await__()

    async def cancel(self) -> FerryError | R:
        """Sends CANCEL and waits for the REPLY: the CancelledError body, or the reply if the
        call had finished first."""
        self._conn._cancel(self._call)
        try:
            return await self.result()
        except FerryError as error:
            return error

    async def __aenter__(self) -> EventCall[E, R]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._call.replied:
            await self.cancel()


class Stream(Generic[R]):
    """A streaming call: send (upload, both), receive (download, both), then `result()`.

    Credit is honoured both ways: `send` waits for credit and never sends a frame that costs
    more than is left; received chunks are credited back as they are consumed. Cancelling a
    task that waits in a stream method aborts the stream (STREAM/ERROR CANCELLED).
    """

    def __init__(self, conn: Connection, call: _Call, reply_type: type[R]) -> None:
        self._conn = conn
        self._call = call
        self._reply_type = reply_type

    @property
    def serial(self) -> int:
        return self._call.serial

    @property
    def credit(self) -> int:
        """Bytes of credit left for sending."""
        return self._call.out_credit

    @property
    def trailer(self) -> bytes:
        """The trailer of the server's finish (section 7.6; empty if it carried none, or
        before it came): what the procedure has the server vouch for at the end of its data."""
        return self._call.in_trailer

    # -- sending --------------------------------------------------------------------------

    def _send_error(self) -> FerryError:
        call = self._call
        if call.out_error is not None:
            return call.out_error
        if call.aborted:
            return _local_error(CancelledError, "the stream was aborted", Layer.STREAM)
        return _local_error(AbortedError, "the sending side is finished", Layer.STREAM)

    async def wait_credit(self, cost: int) -> int:
        """Waits until at least `cost` bytes of credit are left (and the socket has room);
        returns the credit left. Raises the call's error if it ended."""
        call = self._call
        conn = self._conn
        try:
            while True:
                if not call.out_open or call.out_error is not None:
                    raise self._send_error()
                if call.out_credit >= cost:
                    if conn._write_paused:
                        await conn._drain()
                        continue
                    return call.out_credit
                call.out_waiter = conn._loop.create_future()
                await call.out_waiter
        except asyncio.CancelledError:
            call.abort(ErrorCode.CANCELLED, "the client cancelled the stream")
            raise

    def write_frame(self, frame_buf: bytearray | bytes) -> None:
        """Writes a whole STREAM/CONTINUE frame the caller built (header at offset 0, from
        `data_header`), after `wait_credit` said its cost is covered."""
        call = self._call
        cost = len(frame_buf)
        if cost > call.out_credit or not call.out_open:
            raise ValueError("frame beyond credit or after the stream ended")
        call.out_credit -= cost
        self._conn._write(frame_buf)

    def data_header(self, payload_len: int) -> bytes:
        return self._call.header(fr.MessageType.STREAM, fr.Status.CONTINUE, payload_len)

    def max_piece(self) -> int:
        """The largest data payload that fits in the credit left and max chunk."""
        return min(self._conn.options.max_chunk, self._call.out_credit - fr.HEADER_SIZE)

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Sends data, split into pieces that fit max chunk and the credit left."""
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            await self.wait_credit(fr.HEADER_SIZE + 1)
            n = min(self.max_piece(), len(view) - offset)
            self.write_frame(self.data_header(n) + view[offset : offset + n])
            offset += n

    async def send_hole(self, length: int) -> None:
        """Sends a hole of `length` zero bytes (40 bytes of credit)."""
        await self.wait_credit(fr.HOLE_FRAME_SIZE)
        call = self._call
        call.out_credit -= fr.HOLE_FRAME_SIZE
        self._conn._write(
            call.header(fr.MessageType.STREAM_HOLE, fr.Status.CONTINUE, fr.HOLE.size)
            + fr.encode_hole(length)
        )

    def close_send(self, trailer: Message | bytes | None = None) -> None:
        """Sends our finish (STREAM/OK): everything was sent. For an upload that is the last
        frame; the REPLY confirms the commit.

        `trailer` is what the procedure lets the sender vouch for once its data is out
        (section 7.6; the volume program's UPLOAD: `UploadFinish`, the content's BLAKE3): a
        message or its bytes, at most `frame.MAX_TRAILER` (4096) bytes, else ValueError and
        nothing is sent."""
        call = self._call
        payload = b"" if trailer is None else (
            trailer if isinstance(trailer, bytes) else trailer.SerializeToString()
        )
        if len(payload) > fr.MAX_TRAILER:
            raise ValueError(f"a trailer of {len(payload)} bytes, over {fr.MAX_TRAILER}")
        if not call.out_open:
            raise self._send_error()
        call.out_open = False
        call.finish_sent = True
        call.send_control(fr.MessageType.STREAM, fr.Status.OK, payload)
        if call.direction is Direction.UPLOAD:
            call.last_sent = True
            self._conn._maybe_free(call)
        elif call.confirm_pending:
            self._confirm()

    def _confirm(self) -> None:
        call = self._call
        if call.last_sent:
            return
        if call.direction is Direction.BOTH and not call.finish_sent:
            call.confirm_pending = True  # section 7.6: our finish first
            return
        call.last_sent = True
        call.confirm_pending = False
        call.send_control(fr.MessageType.STREAM, fr.Status.OK)
        self._conn._maybe_free(call)

    # -- receiving ------------------------------------------------------------------------

    def _grant(self, cost: int) -> None:
        call = self._call
        call.in_consumed += cost
        if call.in_consumed >= max(self._conn.options.stream_window // 4, 1) and not call.last_sent:
            grant = min(call.in_consumed, fr.MAX_CREDIT - call.in_granted)
            if grant > 0:
                call.in_granted += grant
                call.in_consumed -= grant
                call.send_control(fr.MessageType.CREDIT, fr.Status.OK, fr.encode_grant(grant))

    async def recv(self) -> Chunk | None:
        """The next chunk (bytes or Hole), or None once the server finished its data.

        Raises the call's error if the server aborted or the connection was lost."""
        call = self._call
        try:
            while True:
                if call.in_error is not None:
                    raise call.in_error
                if call.in_chunks:
                    chunk = call.in_chunks.popleft()
                    self._grant(
                        fr.HOLE_FRAME_SIZE if isinstance(chunk, Hole) else fr.HEADER_SIZE + len(chunk)
                    )
                    return chunk
                if call.in_finished:
                    return None
                if call.aborted:
                    raise _local_error(CancelledError, "the stream was aborted", Layer.STREAM)
                call.in_waiter = self._conn._loop.create_future()
                await call.in_waiter
        except asyncio.CancelledError:
            call.abort(ErrorCode.CANCELLED, "the client cancelled the stream")
            raise

    async def recv_many(self, limit: int = 4 * 1024 * 1024) -> list[Chunk]:
        """The chunks that have arrived, waiting for the first: at least one, then as many as
        are buffered, up to about `limit` bytes of data; an empty list once the server
        finished its data. Raises like `recv`."""
        first = await self.recv()
        if first is None:
            return []
        chunks = [first]
        size = 0 if isinstance(first, Hole) else len(first)
        call = self._call
        while call.in_chunks and size < limit and call.in_error is None:
            chunk = call.in_chunks.popleft()
            if isinstance(chunk, Hole):
                self._grant(fr.HOLE_FRAME_SIZE)
            else:
                self._grant(fr.HEADER_SIZE + len(chunk))
                size += len(chunk)
            chunks.append(chunk)
        return chunks

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        while (chunk := await self.recv()) is not None:
            yield chunk

    # -- the end --------------------------------------------------------------------------

    async def result(self, timeout: float | None = None) -> R:
        """Ends our side as it should (finish for an upload not yet finished; confirmation of
        the server's finish for a download) and returns the REPLY, or raises its error."""
        call = self._call
        if (
            call.direction.receives
            and not call.in_finished
            and call.in_error is None
            and not call.reply.done()
        ):
            raise RuntimeError(
                "result() before the server finished its data: read the stream to its end, "
                "or abort() it"
            )
        if call.direction is Direction.UPLOAD and call.out_open and call.out_error is None:
            self.close_send()
        if call.direction.receives and call.in_finished and not call.last_sent:
            self._confirm()
        try:
            payload = await self._conn._await_reply(call, timeout)
        except (asyncio.CancelledError, DeadlineExceededError):
            call.abort(ErrorCode.CANCELLED, "the client cancelled the stream")
            raise
        return _decode(self._reply_type, payload)

    async def finish(self, trailer: Message | bytes | None = None) -> R:
        """Sends our finish (with `trailer`, see `close_send`) and returns the REPLY (an
        upload's commit confirmation)."""
        if self._call.out_open:
            self.close_send(trailer)
        return await self.result()

    async def abort(
        self, code: ErrorCode = ErrorCode.CANCELLED, message: str = "the client aborted the stream"
    ) -> FerryError | R:
        """Aborts (STREAM/ERROR `code`: CANCELLED when the user cancels, ABORTED when our sink
        or source failed) and returns the server's REPLY: its error (CANCELLED or ABORTED,
        side CLIENT), or the reply if the call had already ended."""
        self._call.abort(code, message)
        try:
            return _decode(self._reply_type, await self._conn._await_reply(self._call, None))
        except FerryError as error:
            return error

    async def cancel(self) -> FerryError | R:
        """Cancels with CANCEL (section 7.3): waits for the REPLY, then closes our side with
        STREAM/ERROR CANCELLED if it was still open."""
        call = self._call
        self._conn._cancel(call)
        try:
            return _decode(self._reply_type, await self._conn._await_reply(call, None))
        except FerryError as error:
            return error
        finally:
            call.abort(ErrorCode.CANCELLED, "the client cancelled the call")

    async def __aenter__(self) -> Stream[R]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None and not self._call.last_sent:
            cancelled = exc_type is asyncio.CancelledError
            self._call.abort(
                ErrorCode.CANCELLED if cancelled else ErrorCode.ABORTED,
                "the client cancelled the stream" if cancelled else f"client failure: {exc_type.__name__}",
            )


__all__ = [
    "Chunk",
    "Connection",
    "Direction",
    "Event",
    "EventCall",
    "Hole",
    "Options",
    "Stream",
    "connect",
    "make_error",
    "tls_context",
]
