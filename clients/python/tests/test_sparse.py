"""sparse.py without a node: regions, prefix hashing (holes as zeros), in a thread or not."""

from __future__ import annotations

import io
import os
from pathlib import Path

import blake3
import pytest

from ferry_client import Chunk, Hole, sparse

MiB = 1 << 20


def sparse_file(path: Path) -> bytes:
    content = bytearray(12 * MiB)
    with open(path, "wb") as f:
        for offset, length in [(4096, 5000), (6 * MiB, MiB + 3)]:
            chunk = os.urandom(length)
            f.seek(offset)
            f.write(chunk)
            content[offset : offset + length] = chunk
        f.truncate(len(content))
    return bytes(content)


@pytest.mark.parametrize("end", [0, 1, 4096, 5 * MiB + 17, 12 * MiB])
async def test_hash_prefix_of_a_sparse_file(tmp_path: Path, end: int) -> None:
    content = sparse_file(tmp_path / "f")
    hasher = blake3.blake3()
    with open(tmp_path / "f", "rb") as f:
        await sparse.hash_prefix(hasher, f, end)
    assert hasher.digest() == blake3.blake3(content[:end]).digest()


@pytest.mark.parametrize("end", [0, 3, 5 * MiB + 17])
async def test_hash_prefix_of_a_file_object_leaves_it_at_the_end(end: int) -> None:
    data = os.urandom(6 * MiB)
    file = io.BytesIO(data)
    file.seek(100)
    hasher = blake3.blake3()
    await sparse.hash_prefix(hasher, file, end)
    assert hasher.digest() == blake3.blake3(data[:end]).digest()
    assert file.tell() == end


async def test_hash_prefix_beyond_the_end_of_the_file() -> None:
    with pytest.raises(EOFError):
        await sparse.hash_prefix(blake3.blake3(), io.BytesIO(b"abc"), 4)


@pytest.mark.parametrize("length", [0, 5, sparse.IN_THREAD + 1])
async def test_hash_zeros(length: int) -> None:
    hasher = blake3.blake3()
    await sparse.hash_zeros(hasher, length)
    assert hasher.digest() == blake3.blake3(bytes(length)).digest()


def test_write_batch_of_many_small_chunks_and_holes(tmp_path: Path) -> None:
    chunks: list[Chunk] = []
    content = bytearray(b"\0" * 10)
    for i in range(3000):  # more pieces than one pwritev takes (IOV_MAX)
        piece = bytes([i % 251 + 1]) * (i % 3 + 1)
        chunks.append(piece)
        content += piece
        if i % 700 == 0:
            chunks.append(Hole(5000))
            content += bytes(5000)
    hasher = blake3.blake3()
    with open(tmp_path / "out", "wb") as f:
        f.truncate(len(content))
        sparse._write_batch(f.fileno(), 10, chunks, hasher)
    assert (tmp_path / "out").read_bytes() == bytes(content)
    assert hasher.digest() == blake3.blake3(bytes(content[10:])).digest()
