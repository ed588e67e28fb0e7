"""ferry_client: an asyncio client of Ferry nodes, written against docs/PROTOCOL.md."""

from .admin import AdminClient
from .connection import (
    Chunk,
    Connection,
    Direction,
    Event,
    EventCall,
    Hole,
    Options,
    Stream,
    connect,
    tls_context,
)
from .errors import (
    UnknownProgramError,
    UnknownVersionError,
    UnknownProcedureError,
    BadRequestError,
    NotFoundError,
    AlreadyExistsError,
    PermissionDeniedError,
    UnauthenticatedError,
    ResourceExhaustedError,
    CancelledError,
    AbortedError,
    ProtocolViolationError,
    ConnectionLostError,
    InternalError,
    ShuttingDownError,
    DeadlineExceededError,
    FailedPreconditionError,
)
from .errors import ERRORS, ErrorCode, FerryError, Layer, Side, error_class
from .events import EventsClient
from .testprog import TestClient
from .volume import ChecksumMismatch, VolumeClient, file_checksum

__version__ = "0.1.0"

__all__ = [
    "AdminClient",
    "ChecksumMismatch",
    "Chunk",
    "Connection",
    "Direction",
    "ERRORS",
    "ErrorCode",
    "Event",
    "EventCall",
    "EventsClient",
    "FerryError",
    "Hole",
    "Layer",
    "Options",
    "Side",
    "Stream",
    "TestClient",
    "VolumeClient",
    "connect",
    "error_class",
    "file_checksum",
    "tls_context",
    "UnknownProgramError",
    "UnknownVersionError",
    "UnknownProcedureError",
    "BadRequestError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "ResourceExhaustedError",
    "CancelledError",
    "AbortedError",
    "ProtocolViolationError",
    "ConnectionLostError",
    "InternalError",
    "ShuttingDownError",
    "DeadlineExceededError",
    "FailedPreconditionError",
]
