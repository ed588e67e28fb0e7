"""docs/PROTOCOL.md section 11: every test vector encoded and decoded byte for byte."""

from __future__ import annotations

import blake3
import pytest

from ferry_client import frame as fr
from ferry_client.errors import ErrorCode, Layer, NotFoundError, CancelledError, Side, error_from_payload
from ferry_client.frame import MessageType as T, Status as S
from ferry_client.pb import test_pb2, volume_pb2, wire_pb2

TEST = fr.TEST
VOLUME = fr.VOLUME
UPLOAD = 5
BLAKE3_OF_NOTHING = bytes.fromhex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
"""BLAKE3 of no bytes, as published with the reference implementation."""


def hexframe(words: str) -> bytes:
    return bytes.fromhex(words.replace(" ", ""))


def body(code: int, message: str, side: int, layer: int) -> bytes:
    return wire_pb2.ErrorBody(code=code, message=message, side=side, layer=layer).SerializeToString()  # type: ignore[arg-type]


VECTORS: list[tuple[str, fr.Header, bytes, str]] = [
    (
        "CALL echo",
        fr.Header(TEST, 1, 1, T.CALL, 1, S.OK),
        test_pb2.EchoRequest(payload=b"hi").SerializeToString(),
        "00000020 74657374 00000001 00000001 00000000 00000001 00000000 0a026869",
    ),
    (
        "REPLY/ERROR not found",
        fr.Header(TEST, 1, 1, T.REPLY, 1, S.ERROR),
        body(5, "no such volume", 2, 4),
        "00000032 74657374 00000001 00000001 00000001 00000001 00000001 0805120e 6e6f2073 75636820 766f6c75 6d651802 2004",
    ),
    (
        "STREAM/CONTINUE data",
        fr.Header(TEST, 1, 4, T.STREAM, 7, S.CONTINUE),
        b"ferry",
        "00000021 74657374 00000001 00000004 00000003 00000007 00000002 66657272 79",
    ),
    (
        "STREAM_HOLE 1 GiB",
        fr.Header(TEST, 1, 4, T.STREAM_HOLE, 7, S.CONTINUE),
        fr.encode_hole(1 << 30),
        "00000028 74657374 00000001 00000004 00000006 00000007 00000002 00000000 40000000 00000000",
    ),
    (
        "CREDIT 1 MiB",
        fr.Header(TEST, 1, 4, T.CREDIT, 7, S.OK),
        fr.encode_grant(1 << 20),
        "00000020 74657374 00000001 00000004 00000007 00000007 00000000 00100000",
    ),
    (
        "CANCEL sleep",
        fr.Header(TEST, 1, 2, T.CANCEL, 3, S.OK),
        b"",
        "0000001c 74657374 00000001 00000002 00000008 00000003 00000000",
    ),
    (
        "STREAM/OK",
        fr.Header(TEST, 1, 4, T.STREAM, 7, S.OK),
        b"",
        "0000001c 74657374 00000001 00000004 00000003 00000007 00000000",
    ),
    (
        "STREAM/OK finish with a trailer",
        fr.Header(VOLUME, 1, UPLOAD, T.STREAM, 9, S.OK),
        volume_pb2.UploadFinish(checksum=BLAKE3_OF_NOTHING).SerializeToString(),
        "0000003e 766f6c75 00000001 00000005 00000003 00000009 00000000 0a20af13 49b9f5f9 a1a6a040 4dea36dc c9499bcb 25c9adc1 12b7cc9a 93cae41f 3262",
    ),
    (
        "STREAM/ERROR cancelled",
        fr.Header(TEST, 1, 4, T.STREAM, 7, S.ERROR),
        body(10, "stop", 1, 3),
        "00000028 74657374 00000001 00000004 00000003 00000007 00000001 080a1204 73746f70 18012003",
    ),
    (
        "keepalive PING",
        fr.Header(fr.KEEPALIVE, 1, 1, T.MESSAGE, 0, S.OK),
        b"",
        "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000",
    ),
    (
        "STREAM_HOLE KEEP 256 KiB",
        fr.Header(VOLUME, 1, UPLOAD, T.STREAM_HOLE, 9, S.CONTINUE),
        fr.encode_hole(256 * 1024, fr.HOLE_KEEP),
        "00000028 766f6c75 00000001 00000005 00000006 00000009 00000002 00000000 00040000 00000001",
    ),
]


@pytest.mark.parametrize("name,header,payload,wire", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_encodes_byte_for_byte(name: str, header: fr.Header, payload: bytes, wire: str) -> None:
    assert fr.encode(header, payload) == hexframe(wire)


@pytest.mark.parametrize("name,header,payload,wire", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_decodes_to_its_fields(name: str, header: fr.Header, payload: bytes, wire: str) -> None:
    frame, used = fr.decode(hexframe(wire))
    assert used == len(hexframe(wire))
    assert frame.header == header
    assert frame.payload == payload


def test_vector_payloads_decode_as_documented() -> None:
    call = fr.decode(hexframe(VECTORS[0][3]))[0]
    echo = test_pb2.EchoRequest()
    echo.ParseFromString(call.payload)
    assert echo.payload == b"hi"

    reply = fr.decode(hexframe(VECTORS[1][3]))[0]
    error = error_from_payload(reply.payload)
    assert isinstance(error, NotFoundError)
    assert (error.code, error.message, error.side, error.layer) == (
        ErrorCode.NOT_FOUND, "no such volume", Side.SERVER, Layer.APPLICATION,
    )
    assert error.to_body().SerializeToString() == reply.payload
    # The annotated bytes of the body: 08 05, 12 0e + 14 bytes, 18 02, 20 04.
    assert reply.payload == b"\x08\x05\x12\x0e" + b"no such volume" + b"\x18\x02\x20\x04"

    hole = fr.decode(hexframe(VECTORS[3][3]))[0]
    assert fr.decode_hole(hole.payload) == 1 << 30
    credit = fr.decode(hexframe(VECTORS[4][3]))[0]
    assert fr.decode_grant(credit.payload) == 1 << 20
    finish = fr.decode(hexframe(VECTORS[7][3]))[0]
    assert len(finish.payload) <= fr.MAX_TRAILER == 4096
    assert finish.payload == b"\x0a\x20" + BLAKE3_OF_NOTHING  # field 1, 32 bytes
    trailer = volume_pb2.UploadFinish()
    trailer.ParseFromString(finish.payload)
    assert trailer.checksum == BLAKE3_OF_NOTHING == blake3.blake3(b"").digest()
    assert (finish.header.program.to_bytes(4, "big"), finish.header.procedure) == (b"volu", UPLOAD)
    abort = error_from_payload(fr.decode(hexframe(VECTORS[8][3]))[0].payload)
    assert isinstance(abort, CancelledError)
    assert (abort.message, abort.side, abort.layer) == ("stop", Side.CLIENT, Layer.STREAM)


@pytest.mark.parametrize(
    "words,kind",
    [
        ("0000001b 74657374 00000001 00000001 00000000 00000001 00000000", "LengthTooSmall"),
        ("01000001 74657374 00000001 00000001 00000000 00000001 00000000", "FrameTooLarge"),
        ("0000001c 74657374 00000001 00000001 00000004 00000001 00000000", "UnknownType"),
        ("0000001c 74657374 00000001 00000001 00000000 00000001 00000003", "UnknownStatus"),
    ],
)
def test_framing_errors_are_detected_from_the_header_alone(words: str, kind: str) -> None:
    with pytest.raises(fr.FramingError) as caught:
        fr.decode_header(hexframe(words))
    assert caught.value.kind == kind


def test_malformed_hole_and_credit_payloads_are_refused() -> None:
    with pytest.raises(ValueError):
        fr.decode_hole(b"\0" * 11)
    with pytest.raises(ValueError):
        fr.decode_grant(b"\0" * 5)
