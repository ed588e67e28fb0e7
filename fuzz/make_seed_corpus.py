#!/usr/bin/env python3
"""Writes the seed corpus for the `decode` fuzz target into corpus/decode/.

The frames are the test vectors of codec/tests/vectors.rs (hex grouped in 4-byte words), plus
one file with several of them back to back, so the fuzzer starts from valid frames of every
type instead of having to discover the header layout. Run from anywhere:

    python3 fuzz/make_seed_corpus.py
"""

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


def main() -> None:
    out = Path(__file__).resolve().parent / "corpus" / "decode"
    out.mkdir(parents=True, exist_ok=True)
    frames = {name: bytes.fromhex(text.replace(" ", "")) for name, text in VECTORS.items()}
    for name, frame in frames.items():
        assert int.from_bytes(frame[:4], "big") == len(frame), name
        (out / f"seed_{name}").write_bytes(frame)
    (out / "seed_session").write_bytes(b"".join(frames[name] for name in SESSION))


if __name__ == "__main__":
    main()
