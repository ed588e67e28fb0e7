"""Test support: real ferryd processes, a wire recorder, raw-frame peers."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ferry_client import frame as fr
from ferry_client.connection import Connection
from ferry_client.errors import FerryError, error_from_payload

REPO = Path(__file__).resolve().parents[3]
READY_WITHIN = 30.0
WAIT = 20.0
"""How long a test waits for something that should happen (a bound, not a sleep)."""


def binary(env: str, name: str) -> str:
    """$FERRYD / $FERRY, else /work/bin, else the workspace's debug build, else PATH."""
    if os.environ.get(env):
        return os.environ[env]
    for candidate in (Path("/work/bin") / name, REPO / "target" / "debug" / name):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"no {name}: set ${env}")
    return found


def ferryd_bin() -> str:
    return binary("FERRYD", "ferryd")


def ferry_bin() -> str:
    return binary("FERRY", "ferry")


def hash_password(user: str, password: str, role: str) -> str:
    """A [[security.users]] entry, from `ferry hash-password`."""
    out = subprocess.run(
        [ferry_bin(), "hash-password", user, "--role", role],
        env={**os.environ, "FERRY_PASSWORD": password},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


class Node:
    """A ferryd on a temporary data dir, with OS-chosen ports read from its ready line."""

    def __init__(self, root: Path, config: str | None = None, *, tcp: bool = True) -> None:
        self.root = root
        self.data = root / "data"
        root.mkdir(parents=True, exist_ok=True)
        args = [ferryd_bin(), "--data-dir", str(self.data), "--metrics", ""]
        args += ["--tcp", "127.0.0.1:0" if tcp else ""]
        if config is not None:
            path = root / "ferryd.toml"
            path.write_text(config)
            args += ["--config", str(path)]
        self.stderr = open(root / "ferryd.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYD_")}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.ready = self._ready_line()
        fields = dict(part.split("=", 1) for part in self.ready.split()[2:])
        self.fields = fields
        self.tcp = fields["tcp"]
        self.unix = fields["unix"]
        self.tls = fields["tls"]

    def _ready_line(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_WITHIN
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not readable:
                self.stop()
                raise RuntimeError(f"ferryd not ready within {READY_WITHIN} s: {self.log()}")
            byte = os.read(self.proc.stdout.fileno(), 1)
            if not byte:
                raise RuntimeError(f"ferryd exited before it was ready: {self.log()}")
            line += byte
        text = line.decode().strip()
        assert text.startswith("ferryd ready: "), text
        return text

    def log(self) -> str:
        self.stderr.flush()
        return (self.root / "ferryd.log").read_text(errors="replace")[-4000:]

    @property
    def unix_uri(self) -> str:
        return f"unix://{self.unix}"

    @property
    def tcp_uri(self) -> str:
        return f"tcp://{self.tcp}"

    @property
    def tls_port(self) -> int:
        return int(self.tls.rsplit(":", 1)[1])

    async def connect(self, **kwargs: object) -> Connection:
        return await Connection.open(self.unix_uri, **kwargs)  # type: ignore[arg-type]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


@dataclass
class Recorder:
    """Every frame a Connection sent and received, in order, with a way to wait for one."""

    frames: list[tuple[str, fr.Frame]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, direction: str, frame: fr.Frame) -> None:
        self.frames.append((direction, frame))
        self._changed.set()

    def find(self, direction: str, pred: Callable[[fr.Frame], bool]) -> list[fr.Frame]:
        return [f for d, f in self.frames if d == direction and pred(f)]

    async def wait_for(
        self, direction: str, pred: Callable[[fr.Frame], bool], timeout: float = WAIT
    ) -> fr.Frame:
        async with asyncio.timeout(timeout):
            while True:
                found = self.find(direction, pred)
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()

    def serial(self, serial: int) -> list[tuple[str, fr.Frame]]:
        return [(d, f) for d, f in self.frames if f.header.serial == serial]


def record(conn: Connection) -> Recorder:
    recorder = Recorder()
    conn.trace = recorder
    return recorder


def error_body(payload: bytes) -> FerryError:
    """An error body as its typed error: `.code`, `.side`, `.layer` (enums), `.message`."""
    return error_from_payload(payload)


class RawPeer:
    """Frames over a socket with nothing of the client library but its codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def unix(cls, path: str) -> RawPeer:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    def send(self, header: fr.Header, payload: bytes = b"") -> None:
        self.writer.write(fr.encode(header, payload))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = WAIT) -> fr.Frame | None:
        """The next frame; None at EOF."""
        async with asyncio.timeout(timeout):
            try:
                head = await self.reader.readexactly(fr.HEADER_SIZE)
            except asyncio.IncompleteReadError as error:
                if not error.partial:
                    return None
                raise
            length, header = fr.decode_header(head)
            payload = await self.reader.readexactly(length - fr.HEADER_SIZE)
            return fr.Frame(header, payload)

    async def recv_where(self, pred: Callable[[fr.Frame], bool], timeout: float = WAIT) -> fr.Frame:
        """Skips frames until one matches (PINGs, credits ...)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame is None:
                    raise EOFError("closed before the frame expected")
                if pred(frame):
                    return frame

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def call_header(program: int, procedure: int, type_: fr.MessageType, serial: int, status: fr.Status) -> fr.Header:
    return fr.Header(program, 1, procedure, type_, serial, status)
