#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into corpus/decode/ and corpus/connection/.

`decode`: the test vectors of codec/tests/vectors.rs (hex grouped in 4-byte words), plus one
file with several of them back to back, so the fuzzer starts from valid frames of every type
instead of having to discover the header layout.

`connection`: byte programs for fuzz_targets/connection.rs (see `Step::parse` there: an opcode
byte per step and its arguments, integers little-endian), one per meaningful session: calls of
every procedure, an upload, a download, a window overrun, a duplicate serial, floods of CREDIT
and CANCEL, stream frames for unknown serials, too many streams, framing errors and half a
frame. `FERRY_FUZZ_DEBUG=1` makes the target print the steps it read from a file. Run from
anywhere:

    python3 fuzz/make_seed_corpus.py
"""

import struct
from pathlib import Path

VECTORS = {
    "call_echo": "00000020 74657374 00000001 00000001 00000000 00000001 00000000 0a026869",
    "reply_error_not_found": "00000032 74657374 00000001 00000001 00000001 00000001 00000001 "
    "0805120e 6e6f2073 75636820 766f6c75 6d651802 2004",
    "stream_data": "00000021 74657374 00000001 00000004 00000003 00000007 00000002 66657272 79",
    "stream_hole_1gib": "00000028 74657374 00000001 00000004 00000006 00000007 00000002 "
    "00000000 40000000 00000000",
    "credit_1mib": "00000020 74657374 00000001 00000004 00000007 00000007 00000000 00100000",
    "cancel": "0000001c 74657374 00000001 00000002 00000008 00000003 00000000",
    "stream_finish": "0000001c 74657374 00000001 00000004 00000003 00000007 00000000",
    "keepalive_ping": "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000",
}

SESSION = [
    "call_echo",
    "stream_data",
    "credit_1mib",
    "stream_hole_1gib",
    "stream_finish",
    "keepalive_ping",
    "cancel",
    "reply_error_not_found",
]

# --- connection: the step encoding of fuzz_targets/connection.rs ------------------------------

ECHO, SLEEP, FAIL, SINK, SOURCE, ECHO_STREAM, TICKS = range(7)
KINDS = {"call": 0, "reply": 1, "message": 2, "stream": 3, "hole": 4, "credit": 5, "cancel": 6}
STATUSES = {"ok": 0, "error": 1, "continue": 2}


def u8(v: int) -> bytes:
    return struct.pack("<B", v)


def u16(v: int) -> bytes:
    return struct.pack("<H", v)


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def blob(data: bytes) -> bytes:
    return u16(len(data)) + data


def serial(n: int) -> bytes:
    """Serials 1..=8 take one byte; others (0 included) a marker byte and a u32."""
    if 1 <= n <= 8:
        return u8(n - 1)
    return u8(0xFC) + u32(n)


def call(which: int, n: int, body: bytes = b"", mode: int = 1) -> bytes:
    """A CALL of test procedure `which` (ECHO…TICKS) with a structured body (mode 1), a
    garbage body (mode 0: `body` is the raw payload), or a big Echo (mode 3)."""
    if mode == 0:
        return u8(0) + u8(which) + serial(n) + u8(0) + blob(body)
    return u8(0) + u8(which) + serial(n) + u8(mode) + body


def echo(n: int, payload: bytes = b"hi") -> bytes:
    return call(ECHO, n, blob(payload))


def sleep(n: int, millis_byte: int) -> bytes:
    """millis_byte 255 sleeps 60 s, others millis_byte % 20 ms."""
    return call(SLEEP, n, u8(millis_byte))


def fail(n: int, code: int, message: bytes) -> bytes:
    return call(FAIL, n, u8(code) + blob(message))


def sink(n: int, stall_after_16: int = 0) -> bytes:
    """A Sink upload; it stops reading after stall_after_16 × 16 bytes (0: never)."""
    return call(SINK, n, u16(stall_after_16))


def source(n: int, length_64: int, data_run=0, hole_run=0, chunk=0, fail_after_64=0) -> bytes:
    """A Source download of length_64 × 64 bytes."""
    body = u16(length_64) + u16(data_run) + u16(hole_run) + u16(chunk) + u16(fail_after_64)
    return call(SOURCE, n, body)


def echo_stream(n: int) -> bytes:
    return call(ECHO_STREAM, n)


def ticks(n: int, count: int) -> bytes:
    return call(TICKS, n, u8(count))


def unknown_procedure(n: int) -> bytes:
    return u8(0) + u8(7) + serial(n) + u8(1) + u8(42)


def unknown_program(n: int) -> bytes:
    return u8(0) + u8(8) + serial(n) + u8(1) + u8(0) + u32(0x12345678)


def unknown_version(n: int) -> bytes:
    return u8(0) + u8(8) + serial(n) + u8(1) + u8(1) + u8(5)


def big_echo(n: int, size: int) -> bytes:
    """size 0: a frame of exactly max_frame; 1: one byte over; 2: 100,000 bytes."""
    return call(ECHO, n, u8(size), mode=3)


def data(n: int, length: int, count: int = 1) -> bytes:
    """count STREAM/CONTINUE frames of length bytes."""
    return u8(1) + serial(n) + u16(length) + u8(count - 1)


def hole(n: int, length: int) -> bytes:
    return u8(2) + serial(n) + u8(1) + u32(length) + u32(0)


def bad_hole(n: int, payload: bytes) -> bytes:
    return u8(2) + serial(n) + u8(0) + blob(payload)


def stream_ok(n: int) -> bytes:
    return u8(3) + serial(n)


def stream_error(n: int, body: bytes = b"") -> bytes:
    return u8(4) + serial(n) + blob(body)


def credit(n: int, grant, count: int = 1) -> bytes:
    """count CREDIT frames; grant: "zero", "max" (u32::MAX), "window", "one", or an int."""
    classes = {"zero": 0, "max": 1, "window": 2, "one": 5}
    if isinstance(grant, int):
        return u8(5) + serial(n) + u8(3) + u32(grant) + u16(count - 1)
    return u8(5) + serial(n) + u8(classes[grant]) + u16(count - 1)


def bad_credit(n: int, payload: bytes) -> bytes:
    return u8(6) + serial(n) + blob(payload)


def cancel(n: int, count: int = 1, spread: bool = False) -> bytes:
    return u8(7) + serial(n) + u16(count - 1) + u8(int(spread))


def frame(kind: str, status: str, n: int, payload: bytes = b"", procedure: int = 1) -> bytes:
    """Any well-framed frame on the test program, version 1."""
    return (u8(8) + u8(0) + u8(0) + u8(procedure) + u8(KINDS[kind]) + serial(n)
            + u8(STATUSES[status]) + blob(payload))


PING, PONG = u8(9), u8(10)


def goaway(body: bytes = b"") -> bytes:
    return u8(11) + blob(body)


def shutdown(body: bytes = b"") -> bytes:
    return u8(12) + blob(body)


def length_below_28(length: int = 27) -> bytes:
    return u8(13) + u8(0) + u8(length)


def length_above_max() -> bytes:
    return u8(13) + u8(1) + u16(0)


def unknown_type(which: int = 0) -> bytes:
    """which: 0 → type 4, 1 → 5, 2 → 9, 3 → 0xffffffff."""
    return u8(13) + u8(2) + u8(which)


def unknown_status() -> bytes:
    return u8(13) + u8(3) + u8(0)


def partial(length: int, cut: int) -> bytes:
    """The first cut bytes of a CALL frame with a length-byte payload."""
    return u8(14) + u16(length) + u32(cut)


def garbage(raw: bytes) -> bytes:
    return u8(15) + blob(raw)


def settle(n: int = 64) -> bytes:
    """Yield n times, so the server acts on what was sent."""
    return u8(16) + u8(n - 1)


CONNECTION = {
    "echo": echo(1) + settle() + echo(2, b"x" * 300) + settle(),
    "every_procedure": echo(1) + sleep(2, 3) + fail(3, 5, b"no such thing") + ticks(4, 5)
    + unknown_procedure(5) + unknown_program(6) + unknown_version(7) + settle(),
    "upload": sink(1) + settle(8) + data(1, 16 * 1024, 3) + hole(1, 1 << 20) + data(1, 10)
    + stream_ok(1) + settle(),
    "download": source(1, 2000) + credit(1, "window") + settle() + credit(1, "window", 4)
    + settle() + credit(1, "window", 4) + settle() + stream_ok(1) + settle(),
    "sparse_download": source(2, 4000, data_run=3000, hole_run=20000, chunk=1000)
    + credit(2, "max") + settle() + stream_ok(2) + settle(),
    "echo_stream": echo_stream(3) + credit(3, "window") + data(3, 100, 2) + hole(3, 4096)
    + stream_ok(3) + settle() + stream_ok(3) + settle(),
    "window_overrun": sink(1, 1) + data(1, 16 * 1024, 8) + settle() + stream_error(1)
    + echo(1) + settle(),
    "oversized_chunk": sink(1) + data(1, 17 * 1024) + stream_error(1) + echo(2) + settle(),
    "empty_chunk": sink(1) + data(1, 0) + settle(),
    "duplicate_serial": sleep(5, 10) + echo(5) + settle() + echo(5) + settle(),
    "serial_zero": echo(0) + sink(0) + settle(),
    "cancel_flood": sleep(1, 255) + cancel(1, 2000) + cancel(2, 2000, spread=True) + settle()
    + echo(1) + settle(),
    "cancel_streams": sink(1) + source(2, 60000) + credit(2, "window") + echo_stream(3)
    + cancel(1) + cancel(2) + cancel(3) + settle() + stream_error(1) + stream_error(2)
    + stream_error(3) + settle(),
    "credit_flood": source(2, 65535) + credit(2, "max", 100) + credit(2, "zero", 2000)
    + credit(2, "one", 2000) + settle(),
    "credit_for_upload": sink(1) + credit(1, "max", 50) + settle(),
    "bad_credit": source(1, 100) + bad_credit(1, b"\x01\x02") + settle() + stream_error(1),
    "unknown_serials": data(7, 10, 3) + hole(8, 1) + stream_ok(6) + stream_error(5)
    + credit(4, "window") + cancel(3) + echo(7) + settle(),
    "data_after_finish": sink(1) + data(1, 10) + stream_ok(1) + data(1, 10) + stream_ok(1)
    + settle(),
    "data_on_download": source(1, 100) + data(1, 10) + settle(),
    "data_on_unary": sleep(1, 255) + data(1, 10) + hole(1, 10) + settle(),
    "bad_hole": sink(1) + bad_hole(1, b"\x00" * 11) + settle(),
    "too_many_streams": sink(1) + sink(2) + sink(3) + sink(4) + source(5, 10) + sink(6)
    + settle() + echo(7) + settle(),
    "stalled_sinks": sink(1, 1) + sink(2, 1) + sink(3, 1) + data(1, 16 * 1024, 4)
    + data(2, 16 * 1024, 4) + data(3, 16 * 1024, 4) + settle() + echo(4),
    "in_flight_limit": b"".join(sleep(n, 255) for n in range(100, 118)) + echo(1) + settle(),
    "bad_protobuf": call(ECHO, 1, b"\xff\xff\xff", mode=0) + call(SINK, 2, b"\x0a\x05", mode=0)
    + call(SOURCE, 3, b"\x08", mode=0) + settle(),
    "status_combinations": source(1, 100) + frame("credit", "error", 1, b"\x00\x01\x00\x00")
    + frame("cancel", "continue", 1) + frame("call", "error", 2) + frame("reply", "ok", 3)
    + frame("message", "ok", 4) + frame("hole", "ok", 1, b"\x00" * 12) + settle(),
    "control": PING + PONG + shutdown(b"\x08\x01") + echo(1) + settle() + goaway(b"\x08\x0b"),
    "goaway_mid_stream": sink(1) + data(1, 100) + goaway() + data(1, 100),
    "max_frame": big_echo(1, 0) + settle() + big_echo(2, 2) + settle(),
    "over_max_frame": echo(1) + big_echo(2, 1),
    "length_below_28": echo(1) + length_below_28(),
    "length_above_max": echo(1) + length_above_max(),
    "unknown_type": echo(1) + unknown_type(0),
    "unknown_status": echo(1) + unknown_status(),
    "half_a_frame": echo(1) + settle() + partial(100, 50),
    "half_a_header": partial(0, 13),
    "garbage": echo(1) + garbage(bytes(range(64))),
    # Inputs that found bugs (fuzz/README.md, "Findings"), as the fuzzer wrote them. They pass
    # while the target steps around those bugs, and find them again once it no longer does.
    # A burst of Echo replies (a deadlock with a small write_queue):
    "regression_reply_burst": bytes.fromhex(
        "00040101ffff000000000000000005010163000500000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000100"
        "cf0705940105cf07103f"
    ),
    # A hole claiming about 2^50 bytes (capped by HOLE_CAP now):
    "regression_huge_hole": bytes.fromhex(
        "000323010000000381010000000302010000000303010381010000000302010000c00003030100103f06"
        "010200000000030301038101000000030201000069690004"
    ),
    # A sparse Source, a grant of 2^32-1 and a CANCEL (data after the REPLY):
    "regression_data_after_reply": bytes.fromhex(
        "00040101ffff040187870000000000103f07000005010100003a010507"
    ),
}


def main() -> None:
    here = Path(__file__).resolve().parent
    out = here / "corpus" / "connection"
    out.mkdir(parents=True, exist_ok=True)
    for name, program in CONNECTION.items():
        (out / f"seed_{name}").write_bytes(program)

    out = here / "corpus" / "decode"
    out.mkdir(parents=True, exist_ok=True)
    frames = {name: bytes.fromhex(text.replace(" ", "")) for name, text in VECTORS.items()}
    for name, frame_bytes in frames.items():
        assert int.from_bytes(frame_bytes[:4], "big") == len(frame_bytes), name
        (out / f"seed_{name}").write_bytes(frame_bytes)
    (out / "seed_session").write_bytes(b"".join(frames[name] for name in SESSION))


if __name__ == "__main__":
    main()
