"""Typed errors: one class per code of section 6.2, raised for each code a handler fails with."""

from __future__ import annotations

import pytest

import ferry_client as fc
from ferry_client import Connection, ErrorCode, FerryError, Layer, Side, TestClient
from ferry_client.errors import error_class, error_from_payload
from ferry_client.pb import wire_pb2

CODES = [c for c in ErrorCode if c != ErrorCode.UNSPECIFIED]


def test_every_code_has_its_own_class_with_a_common_base() -> None:
    classes = {error_class(code) for code in CODES}
    assert len(classes) == len(CODES) == 17
    for code in CODES:
        cls = error_class(code)
        assert issubclass(cls, FerryError) and cls.code == code
        assert getattr(fc, cls.__name__) is cls


def test_unknown_codes_are_internal_keeping_the_number() -> None:
    body = wire_pb2.ErrorBody(code=99, message="new", side=2, layer=4)  # type: ignore[arg-type]
    error = error_from_payload(body.SerializeToString())
    assert type(error) is fc.InternalError
    assert error.raw_code == 99 and error.message == "new"
    assert isinstance(error_from_payload(b"\xff\xff"), fc.InternalError)


@pytest.mark.parametrize("code", [c for c in CODES if c != ErrorCode.CONNECTION_LOST], ids=lambda c: c.name)
async def test_a_handler_error_raises_the_class_of_its_code(conn: Connection, code: ErrorCode) -> None:
    with pytest.raises(FerryError) as caught:
        await TestClient(conn).fail(int(code), f"asked for {code.name}")
    error = caught.value
    assert type(error) is error_class(code)
    assert error.code == code
    assert error.message == f"asked for {code.name}"
    assert (error.side, error.layer) == (Side.SERVER, Layer.APPLICATION)
    assert conn.open_serials == []


async def test_unknown_program_version_and_procedure(conn: Connection) -> None:
    from ferry_client.pb import test_pb2

    with pytest.raises(fc.UnknownProgramError):
        await conn.call(0x12345678, 1, 1, test_pb2.EchoRequest(), test_pb2.EchoReply)
    with pytest.raises(fc.UnknownVersionError):
        await conn.call(fc.frame.TEST, 9, 1, test_pb2.EchoRequest(), test_pb2.EchoReply)
    with pytest.raises(fc.UnknownProcedureError):
        await conn.call(fc.frame.TEST, 1, 99, test_pb2.EchoRequest(), test_pb2.EchoReply)
    with pytest.raises(fc.BadRequestError):
        conn_call = conn.start(fc.frame.TEST, 1, 1, b"\xff\xff\xff")
        result = await conn_call.reply
        assert isinstance(result, FerryError)
        raise result
