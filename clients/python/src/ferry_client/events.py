"""The events program (0x65766e74 "evnt", version 1; node/proto/ferry/events/v1)."""

from __future__ import annotations

from . import frame as fr
from .connection import Connection, EventCall
from .pb import events_pb2 as pb

SUBSCRIBE = 1
EVENT = 100


class EventsClient:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def subscribe(self) -> EventCall[pb.Event, pb.SubscribeReply]:
        """SUBSCRIBE: an async iterator of the node's events, first `subscribed`, then one per
        change. Use it as `async with events.subscribe() as sub: async for event in sub: ...`;
        leaving the block cancels the subscription."""
        return self.conn.call_with_events(
            fr.EVENTS, 1, SUBSCRIBE, pb.SubscribeRequest(), pb.SubscribeReply, pb.Event
        )
