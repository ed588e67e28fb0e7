"""The admin program (0x61646d6e "admn", version 1; node/proto/ferry/admin/v1)."""

from __future__ import annotations

from . import frame as fr
from .connection import Connection
from .pb import admin_pb2 as pb

INFO, CLIENTS, DISCONNECT = 1, 2, 3


class AdminClient:
    """The node's administration (needs the admin role)."""

    def __init__(self, conn: Connection, *, timeout: float | None = 30.0) -> None:
        self.conn = conn
        self.timeout = timeout

    async def info(self) -> pb.ServerInfo:
        return await self.conn.call(fr.ADMIN, 1, INFO, pb.InfoRequest(), pb.ServerInfo, timeout=self.timeout)

    async def clients(self) -> list[pb.Client]:
        reply = await self.conn.call(
            fr.ADMIN, 1, CLIENTS, pb.ClientsRequest(), pb.ClientsReply, timeout=self.timeout
        )
        return list(reply.clients)

    async def disconnect(self, client_id: int) -> None:
        """Closes a client's connection (it gets GOAWAY ABORTED)."""
        await self.conn.call(
            fr.ADMIN, 1, DISCONNECT, pb.DisconnectRequest(id=client_id), pb.DisconnectReply,
            timeout=self.timeout,
        )
