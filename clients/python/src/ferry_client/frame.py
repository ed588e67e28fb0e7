"""Ferry frames (docs/PROTOCOL.md sections 2-4): the length word, the 24-byte header, payloads.

No I/O here: encoding to bytes, decoding from a buffer. Every integer is big-endian and
unsigned.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IIIIIII")
"""Length word and header: length, program, version, procedure, type, serial, status."""
HEADER_SIZE = HEADER.size  # 28
HOLE = struct.Struct(">QI")
"""A STREAM_HOLE payload: length (u64), flags (u32)."""
HOLE_FRAME_SIZE = HEADER_SIZE + HOLE.size  # 40, what a hole costs in credit
HOLE_KEEP = 1
"""STREAM_HOLE flag: a KEEP range, the receiver's base bytes (PROTOCOL.md sections 7.4, 14)."""
GRANT = struct.Struct(">I")
"""A CREDIT payload: the number of bytes added to the sender's allowance."""
MAX_CREDIT = 2**32 - 1
MAX_TRAILER = 4096
"""The most a finish (a sender's first STREAM/OK) may carry as its trailer (section 7.6): a
checksum or a few fields the procedure defines, never data. A longer one is a violation."""

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
DEFAULT_MAX_CHUNK = 256 * 1024
DEFAULT_STREAM_WINDOW = 1024 * 1024


class MessageType(enum.IntEnum):
    """Section 3."""

    CALL = 0
    REPLY = 1
    MESSAGE = 2
    STREAM = 3
    STREAM_HOLE = 6
    CREDIT = 7
    CANCEL = 8


class Status(enum.IntEnum):
    """Section 4."""

    OK = 0
    ERROR = 1
    CONTINUE = 2


# Section 6.1: reserved programs and their procedures.
KEEPALIVE = 0x6B656570
KEEPALIVE_PING = 1
KEEPALIVE_PONG = 2
CONTROL = 0x66727279
CONTROL_SHUTDOWN = 1
CONTROL_GOAWAY = 2
TEST = 0x74657374
VOLUME = 0x766F6C75
EVENTS = 0x65766E74
ADMIN = 0x61646D6E
AUTH = 0x61757468

_TYPES = frozenset(int(t) for t in MessageType)
_STATUSES = frozenset(int(s) for s in Status)


class FramingError(Exception):
    """A framing error (section 2): after one the byte stream cannot be trusted."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        """`LengthTooSmall`, `FrameTooLarge`, `UnknownType`, `UnknownStatus` or `UnexpectedEof`."""


@dataclass(frozen=True, slots=True)
class Header:
    """The 24 bytes after the length word."""

    program: int
    version: int
    procedure: int
    type: MessageType
    serial: int
    status: Status


@dataclass(frozen=True, slots=True)
class Frame:
    header: Header
    payload: bytes


def encode_header(
    payload_len: int,
    program: int,
    version: int,
    procedure: int,
    type_: int,
    serial: int,
    status: int,
) -> bytes:
    """The 28 bytes (length word and header) of a frame whose payload has `payload_len` bytes."""
    return HEADER.pack(
        HEADER_SIZE + payload_len, program, version, procedure, type_, serial, status
    )


def encode(header: Header, payload: bytes = b"") -> bytes:
    """A whole frame."""
    return (
        encode_header(
            len(payload),
            header.program,
            header.version,
            header.procedure,
            header.type,
            header.serial,
            header.status,
        )
        + payload
    )


def decode_header(buf: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[int, Header]:
    """Validates the first 28 bytes of `buf` (section 2) and returns (length, header).

    Raises FramingError for a length under 28 or over `max_frame`, an unknown type or status.
    """
    length, program, version, procedure, type_, serial, status = HEADER.unpack_from(buf, 0)
    check_header(length, type_, status, max_frame)
    return length, Header(program, version, procedure, MessageType(type_), serial, Status(status))


def check_header(length: int, type_: int, status: int, max_frame: int) -> None:
    if length < HEADER_SIZE:
        raise FramingError("LengthTooSmall", f"length {length} < {HEADER_SIZE}")
    if length > max_frame:
        raise FramingError("FrameTooLarge", f"length {length} > max frame {max_frame}")
    if type_ not in _TYPES:
        raise FramingError("UnknownType", f"type {type_}")
    if status not in _STATUSES:
        raise FramingError("UnknownStatus", f"status {status}")


def decode(buf: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[Frame, int]:
    """Decodes one whole frame at the start of `buf`; returns it and the bytes it took.

    Raises FramingError, or ValueError if `buf` holds less than a whole frame.
    """
    if len(buf) < HEADER_SIZE:
        raise ValueError("less than a header")
    length, header = decode_header(buf, max_frame)
    if len(buf) < length:
        raise ValueError(f"frame of {length} bytes, {len(buf)} available")
    return Frame(header, bytes(buf[HEADER_SIZE:length])), length


def encode_hole(length: int, flags: int = 0) -> bytes:
    return HOLE.pack(length, flags)


def decode_hole(payload: bytes | memoryview) -> int:
    """The length of a hole; ValueError unless the payload has exactly 12 bytes."""
    if len(payload) != HOLE.size:
        raise ValueError(f"hole payload of {len(payload)} bytes, not {HOLE.size}")
    length, _flags = HOLE.unpack(payload)
    return int(length)


def encode_grant(grant: int) -> bytes:
    return GRANT.pack(grant)


def decode_grant(payload: bytes | memoryview) -> int:
    """A CREDIT grant; ValueError unless the payload has exactly 4 bytes."""
    if len(payload) != GRANT.size:
        raise ValueError(f"credit payload of {len(payload)} bytes, not {GRANT.size}")
    return int(GRANT.unpack(payload)[0])
