"""Typed errors: one class per error code of docs/PROTOCOL.md section 6.2.

Every error a call, stream or connection fails with is a FerryError carrying the error body's
code, message, side and layer. `error_from_body` picks the class for a code; an unknown code is
treated as INTERNAL, as section 6.2 requires (the number received stays in `raw_code`).
"""

from __future__ import annotations

import enum

from .pb import wire_pb2


class ErrorCode(enum.IntEnum):
    UNSPECIFIED = 0
    UNKNOWN_PROGRAM = 1
    UNKNOWN_VERSION = 2
    UNKNOWN_PROCEDURE = 3
    BAD_REQUEST = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    UNAUTHENTICATED = 8
    RESOURCE_EXHAUSTED = 9
    CANCELLED = 10
    ABORTED = 11
    PROTOCOL_VIOLATION = 12
    CONNECTION_LOST = 13
    INTERNAL = 14
    SHUTTING_DOWN = 15
    DEADLINE_EXCEEDED = 16
    FAILED_PRECONDITION = 17


class Side(enum.IntEnum):
    UNSPECIFIED = 0
    CLIENT = 1
    SERVER = 2


class Layer(enum.IntEnum):
    UNSPECIFIED = 0
    CONNECTION = 1
    CALL = 2
    STREAM = 3
    APPLICATION = 4


class FerryError(Exception):
    """The base of every Ferry error: the fields of an error body."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        side: Side = Side.UNSPECIFIED,
        layer: Layer = Layer.UNSPECIFIED,
        raw_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.side = side
        self.layer = layer
        self.raw_code = int(self.code) if raw_code is None else raw_code
        """The code as received; differs from `code` only for a code this client does not know."""

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, side={self.side.name}, "
            f"layer={self.layer.name})"
        )

    def to_body(self) -> wire_pb2.ErrorBody:
        return wire_pb2.ErrorBody(
            code=int(self.code),  # type: ignore[arg-type]
            message=self.message,
            side=int(self.side),  # type: ignore[arg-type]
            layer=int(self.layer),  # type: ignore[arg-type]
        )


class UnknownProgramError(FerryError):
    code = ErrorCode.UNKNOWN_PROGRAM


class UnknownVersionError(FerryError):
    code = ErrorCode.UNKNOWN_VERSION


class UnknownProcedureError(FerryError):
    code = ErrorCode.UNKNOWN_PROCEDURE


class BadRequestError(FerryError):
    code = ErrorCode.BAD_REQUEST


class NotFoundError(FerryError):
    code = ErrorCode.NOT_FOUND


class AlreadyExistsError(FerryError):
    code = ErrorCode.ALREADY_EXISTS


class PermissionDeniedError(FerryError):
    code = ErrorCode.PERMISSION_DENIED


class UnauthenticatedError(FerryError):
    code = ErrorCode.UNAUTHENTICATED


class ResourceExhaustedError(FerryError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class CancelledError(FerryError):
    """The call was cancelled (not asyncio.CancelledError: this one is the wire's CANCELLED)."""

    code = ErrorCode.CANCELLED


class AbortedError(FerryError):
    code = ErrorCode.ABORTED


class ProtocolViolationError(FerryError):
    code = ErrorCode.PROTOCOL_VIOLATION


class ConnectionLostError(FerryError):
    code = ErrorCode.CONNECTION_LOST


class InternalError(FerryError):
    code = ErrorCode.INTERNAL


class ShuttingDownError(FerryError):
    code = ErrorCode.SHUTTING_DOWN


class DeadlineExceededError(FerryError):
    code = ErrorCode.DEADLINE_EXCEEDED


class FailedPreconditionError(FerryError):
    code = ErrorCode.FAILED_PRECONDITION


ERRORS: dict[ErrorCode, type[FerryError]] = {
    cls.code: cls
    for cls in (
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
}


def error_class(code: int) -> type[FerryError]:
    """The class for a code; INTERNAL's for a code this client does not know (or 0)."""
    try:
        return ERRORS[ErrorCode(code)]
    except (ValueError, KeyError):
        return InternalError


def _enum(cls: type[Side] | type[Layer], value: int) -> Side | Layer:
    try:
        return cls(value)
    except ValueError:
        return cls(0)


def error_from_body(body: wire_pb2.ErrorBody) -> FerryError:
    side = _enum(Side, int(body.side))
    layer = _enum(Layer, int(body.layer))
    assert isinstance(side, Side) and isinstance(layer, Layer)
    return error_class(int(body.code))(
        body.message, side=side, layer=layer, raw_code=int(body.code)
    )


def error_from_payload(payload: bytes) -> FerryError:
    """Decodes an error body; one that does not decode is INTERNAL."""
    body = wire_pb2.ErrorBody()
    try:
        body.ParseFromString(payload)
    except Exception:
        return InternalError(
            f"undecodable error body ({len(payload)} bytes)", side=Side.SERVER
        )
    return error_from_body(body)


def make_error(code: ErrorCode, message: str, side: Side, layer: Layer) -> FerryError:
    return error_class(code)(message, side=side, layer=layer)
