"""SCRAM-SHA-256 (RFC 5802 / RFC 7677, no channel binding) over the auth program, exactly as
docs/PROTOCOL.md section 9.4 lays it out: the four messages travel as one STREAM/CONTINUE chunk
each on a bidirectional SCRAM_SHA_256 call; the REPLY says who the connection now is."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from . import frame as fr
from .errors import ErrorCode, Layer, Side, UnauthenticatedError
from .pb import auth_pb2

if TYPE_CHECKING:
    from .connection import Connection

SCRAM_SHA_256 = 1
MAX_MESSAGE = 4096


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ValueError(f"malformed SCRAM attribute {part!r}")
        out.setdefault(part[0], part[2:])
    return out


class ScramClient:
    """The client's side of one exchange; no I/O (tests drive it with RFC 7677's vector)."""

    def __init__(self, user: str, password: str, nonce: str | None = None) -> None:
        self.user = user
        self.password = password
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self.client_first_bare = f"n={_escape(user)},r={self.nonce}"
        self._server_signature = b""

    def client_first(self) -> str:
        return "n,," + self.client_first_bare

    def client_final(self, server_first: str) -> str:
        attrs = _attributes(server_first)
        if "e" in attrs:
            raise _unauthenticated(f"server error: {attrs['e']}")
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i")
        if not nonce.startswith(self.nonce) or len(nonce) <= len(self.nonce):
            raise _unauthenticated("the server's nonce does not extend ours")
        if salt is None or iterations is None or not iterations.isdigit():
            raise _unauthenticated("server-first message lacks salt or iterations")
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify_server_final(self, server_final: str) -> None:
        attrs = _attributes(server_final)
        if "e" in attrs:
            raise _unauthenticated(f"server error: {attrs['e']}")
        verifier = attrs.get("v")
        if verifier is None or not hmac.compare_digest(
            base64.b64decode(verifier), self._server_signature
        ):
            raise _unauthenticated("the server's signature is wrong: it does not know the password")


def _unauthenticated(message: str) -> UnauthenticatedError:
    return UnauthenticatedError(message, side=Side.CLIENT, layer=Layer.APPLICATION)


async def _message(stream: object) -> str:
    from .connection import Hole, Stream

    assert isinstance(stream, Stream)
    chunk = await stream.recv()
    if chunk is None or isinstance(chunk, Hole):
        raise _unauthenticated("the server ended the exchange early")
    return chunk.decode()


async def authenticate(conn: Connection, user: str, password: str) -> auth_pb2.Authenticated:
    from .connection import Direction

    scram = ScramClient(user, password)
    stream = conn.stream(
        fr.AUTH, 1, SCRAM_SHA_256, auth_pb2.ScramStart(), auth_pb2.Authenticated, Direction.BOTH
    )
    try:
        await stream.send(scram.client_first().encode())
        final = scram.client_final(await _message(stream))
        await stream.send(final.encode())
        scram.verify_server_final(await _message(stream))
        stream.close_send()
        if await stream.recv() is not None:
            raise _unauthenticated("the server sent more than the four SCRAM messages")
        return await stream.result()
    except UnauthenticatedError as error:
        if error.side is Side.CLIENT:
            await stream.abort(ErrorCode.ABORTED, str(error))  # our check failed
        raise
