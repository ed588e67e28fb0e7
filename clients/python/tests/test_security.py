"""Section 9.4: TLS (CA and host name verified) and SCRAM-SHA-256, against a ferryd with users."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ferry_client as fc
from ferry_client import TestClient, VolumeClient
from ferry_client.frame import MessageType as T
from ferry_client.scram import ScramClient
from support import Node, error_body, hash_password, record


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(dir: Path, prefix: str) -> tuple[Path, Path, Path]:
    """A CA and a certificate for localhost/127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{prefix} CA"))
        .issuer_name(_name(f"{prefix} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (dir / f"{prefix}-ca.pem", dir / f"{prefix}-cert.pem", dir / f"{prefix}-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


class Secured:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.ca, cert, key = make_pki(root, "node")
        self.other_ca = make_pki(root, "other")[0]
        config = (
            f'[security]\ntls = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n\n'
            + hash_password("alice", "wonderland", "read-write")
            + hash_password("bob", "builder", "read-only")
        )
        self.node = Node(root / "node", config)
        self.tls_uri = f"tls://localhost:{self.node.tls_port}"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    s = Secured(tmp_path / "secured")
    yield s
    s.node.stop()


def test_scram_client_matches_rfc_7677() -> None:
    # RFC 7677 section 3: user "user", password "pencil".
    scram = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert scram.client_first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert scram.client_final(server_first) == (
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(fc.UnauthenticatedError):
        scram.verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


async def test_tls_and_the_right_password_get_in_with_the_users_role(secured: Secured) -> None:
    conn = await fc.connect(secured.tls_uri, ca=secured.ca, user="alice", password="wonderland")
    assert (conn.identity, conn.role) == ("alice", 2)
    assert await TestClient(conn).echo(b"over tls") == b"over tls"
    volumes = VolumeClient(conn)
    await volumes.create("made-by-alice", 4096)
    assert [v.name for v in await volumes.list()] == ["made-by-alice"]
    # A stream over TLS, both ways.
    source = TestClient(conn).source(3_000_000, data_run=500_000, hole_run=100_000)
    total = 0
    async for chunk in source:
        total += chunk.length if isinstance(chunk, fc.Hole) else len(chunk)
    assert total == 3_000_000 and (await source.result()).bytes == 3_000_000
    await conn.aclose()


async def test_scram_exchange_on_the_wire(secured: Secured) -> None:
    conn = await fc.connect(f"tcp://{secured.node.tcp}")
    rec = record(conn)
    await conn.authenticate("bob", "builder")
    frames = [(d, f.header.type, f.header.status, f.payload) for d, f in rec.frames]
    assert frames[0][:2] == ("tx", T.CALL) and frames[1][:2] == ("tx", T.CREDIT)
    data = [(d, p.decode()) for d, t, s, p in frames if t == T.STREAM and s == 2]
    assert [d for d, _ in data] == ["tx", "rx", "tx", "rx"]
    assert data[0][1].startswith("n,,n=bob,r=")
    assert data[1][1].startswith("r=") and ",s=" in data[1][1] and ",i=" in data[1][1]
    assert data[2][1].startswith("c=biws,r=") and ",p=" in data[2][1]
    assert data[3][1].startswith("v=")
    oks = [d for d, t, s, _ in frames if t == T.STREAM and s == 0]
    assert oks == ["tx", "rx", "tx"]  # our finish, the server's, our confirmation
    assert (conn.identity, conn.role) == ("bob", 1)
    with pytest.raises(fc.PermissionDeniedError):
        await VolumeClient(conn).create("bob-may-not", 1)
    assert await VolumeClient(conn).list() == []
    await conn.aclose()


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("nobody", "wonderland")])
async def test_a_wrong_password_and_an_unknown_user_fail_alike(secured: Secured, user: str, password: str) -> None:
    conn = await fc.connect(secured.tls_uri, ca=secured.ca)
    rec = record(conn)
    with pytest.raises(fc.UnauthenticatedError) as caught:
        await conn.authenticate(user, password)
    assert caught.value.message == "wrong user name or password"
    assert caught.value.side == fc.Side.SERVER
    # The REPLY came while our side was open: we closed it with STREAM/ERROR ABORTED.
    closing = rec.find("tx", lambda f: f.header.type == T.STREAM and f.header.status == 1)
    assert len(closing) == 1 and error_body(closing[0].payload).code == fc.ErrorCode.ABORTED
    assert conn.open_serials == []
    with pytest.raises(fc.UnauthenticatedError):
        await TestClient(conn).echo(b"no identity yet")
    # A connection may try again.
    await conn.authenticate("alice", "wonderland")
    assert await TestClient(conn).echo(b"now") == b"now"
    await conn.aclose()


async def test_connect_with_a_bad_password_raises_and_closes(secured: Secured) -> None:
    with pytest.raises(fc.UnauthenticatedError):
        await fc.connect(secured.tls_uri, ca=secured.ca, user="alice", password="nope")


async def test_tls_refuses_another_ca_and_another_host_name(secured: Secured) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await fc.connect(secured.tls_uri, ca=secured.other_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        await fc.connect(secured.tls_uri, ca=secured.ca, server_hostname="not-this-node.example")
    with pytest.raises(ValueError):
        await fc.connect(secured.tls_uri)  # no CA: refused before dialling
    # By IP address, which the certificate also names.
    conn = await fc.connect(
        f"tls://127.0.0.1:{secured.node.tls_port}", ca=secured.ca, user="bob", password="builder"
    )
    assert conn.identity == "bob"
    await conn.aclose()
