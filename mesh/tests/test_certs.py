"""The mesh's CA and service certificates: contents, files, the CLI, a real mTLS handshake.

Certificates are checked with cryptography's own path validation
(`x509.verification`), the way a TLS peer checks them, and once end to end
with a grpc.aio server that requires a client certificate from the shop's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh import certs
from mesh.config import Env
from mesh.server import HealthServicer

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def ca() -> certs.Issued:
    return certs.create_ca()


def _store(ca: certs.Issued) -> Store:
    return Store([ca.cert])


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _serials(directory: Path) -> dict[str, int]:
    return {
        name: certs.load(directory, name).cert.serial_number for name in ("ca", *certs.SERVICES)
    }


# --- what a certificate says ---------------------------------------------------


def test_a_service_certificate_names_its_identity_and_hosts(ca: certs.Issued) -> None:
    issued = certs.issue(ca, "catalog")
    san = _san(issued.cert)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://shop.local/catalog"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["catalog", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    eku = issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert issued.cert.issuer == ca.cert.subject


def test_keys_are_ecdsa_p256(ca: certs.Issued) -> None:
    for issued in (ca, certs.issue(ca, "orders")):
        public = issued.cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)
        assert isinstance(issued.key.curve, ec.SECP256R1)


def test_the_ca_may_sign_services_but_no_other_ca(ca: certs.Issued) -> None:
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert ca.cert.issuer == ca.cert.subject


def test_lifetime_is_a_day_by_default_and_configurable(ca: certs.Issued) -> None:
    default = certs.issue(ca, "payments")
    lifetime = default.cert.not_valid_after_utc - default.cert.not_valid_before_utc
    assert dt.timedelta(days=1) <= lifetime <= dt.timedelta(days=1, minutes=10)

    week = certs.issue(ca, "payments", lifetime=dt.timedelta(days=7))
    lifetime = week.cert.not_valid_after_utc - week.cert.not_valid_before_utc
    assert dt.timedelta(days=7) <= lifetime <= dt.timedelta(days=7, minutes=10)


def test_no_certificate_outlives_its_ca() -> None:
    short_ca = certs.create_ca(lifetime=dt.timedelta(days=2))
    issued = certs.issue(short_ca, "orders", lifetime=dt.timedelta(days=30))
    assert issued.cert.not_valid_after_utc == short_ca.cert.not_valid_after_utc


@pytest.mark.parametrize("name", ["", "Catalog", "cat/alog", "-catalog", "catalog.shop"])
def test_a_service_name_must_be_a_dns_label(ca: certs.Issued, name: str) -> None:
    with pytest.raises(ValueError, match="not a service name"):
        certs.issue(ca, name)


# --- verification, as a TLS peer does it ---------------------------------------


def test_a_service_certificate_verifies_against_the_ca(ca: certs.Issued) -> None:
    issued = certs.issue(ca, "catalog")
    builder = PolicyBuilder().store(_store(ca))
    for name in (
        x509.DNSName("catalog"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ):
        chain = builder.build_server_verifier(name).verify(issued.cert, [])
        assert chain[-1] == ca.cert
    client = builder.build_client_verifier().verify(issued.cert, [])
    assert x509.UniformResourceIdentifier("spiffe://shop.local/catalog") in (client.subjects or [])


def test_a_certificate_for_another_name_does_not_verify_as_that_name(ca: certs.Issued) -> None:
    issued = certs.issue(ca, "orders")
    verifier = PolicyBuilder().store(_store(ca)).build_server_verifier(x509.DNSName("payments"))
    with pytest.raises(VerificationError):
        verifier.verify(issued.cert, [])


def test_a_rogue_cas_certificate_does_not_verify(ca: certs.Issued, tmp_path: Path) -> None:
    bad = certs.write_bad_certificates(tmp_path, ca, "catalog")
    rogue = x509.load_pem_x509_certificate(bad.rogue_cert.read_bytes())
    assert certs.identity_of(rogue) == "spiffe://shop.local/catalog"  # the right name ...
    builder = PolicyBuilder().store(_store(ca))
    with pytest.raises(VerificationError):  # ... from the wrong issuer
        builder.build_client_verifier().verify(rogue, [])
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("catalog")).verify(rogue, [])


def test_an_expired_certificate_is_expired(ca: certs.Issued, tmp_path: Path) -> None:
    bad = certs.write_bad_certificates(tmp_path, ca, "catalog")
    expired = x509.load_pem_x509_certificate(bad.expired_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert expired.not_valid_after_utc < now
    expired.verify_directly_issued_by(ca.cert)  # signed by the shop's CA all the same
    with pytest.raises(VerificationError):
        PolicyBuilder().store(_store(ca)).build_client_verifier().verify(expired, [])


# --- reading the identity --------------------------------------------------------


def test_identity_of_reads_pem_der_and_objects(ca: certs.Issued) -> None:
    cert = certs.issue(ca, "notifications").cert
    expected = "spiffe://shop.local/notifications"
    assert certs.identity_of(cert) == expected
    assert certs.identity_of(cert.public_bytes(serialization.Encoding.PEM)) == expected
    assert certs.identity_of(cert.public_bytes(serialization.Encoding.PEM).decode()) == expected
    assert certs.identity_of(cert.public_bytes(serialization.Encoding.DER)) == expected
    assert certs.service_of(expected) == "notifications"


def test_identity_of_refuses_a_certificate_without_one(ca: certs.Issued) -> None:
    with pytest.raises(certs.CertificateError, match="no subject alternative names"):
        certs.identity_of(ca.cert)


@pytest.mark.parametrize(
    "identity", ["spiffe://other.domain/catalog", "spiffe://shop.local/", "https://shop.local/x"]
)
def test_service_of_refuses_foreign_identities(identity: str) -> None:
    with pytest.raises(certs.CertificateError):
        certs.service_of(identity)


# --- files and the CLI -----------------------------------------------------------


def test_ensure_writes_the_documented_layout_with_private_keys(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    expected = {f"{name}.{ext}" for name in ("ca", *certs.SERVICES) for ext in ("pem", "key")}
    assert {p.name for p in directory.iterdir() if not p.name.startswith(".")} == expected
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("ca", *certs.SERVICES):
        assert stat.S_IMODE(certs.key_path(directory, name).stat().st_mode) == 0o600
        assert stat.S_IMODE(certs.cert_path(directory, name).stat().st_mode) == 0o644
        certs.load(directory, name)  # the key belongs to the certificate
    for service in certs.SERVICES:
        cert = certs.load(directory, service).cert
        assert certs.identity_of(cert) == certs.spiffe_id(service)
    assert not list(directory.glob("*.tmp"))


def test_bad_certificates_keys_are_private_too(ca: certs.Issued, tmp_path: Path) -> None:
    bad = certs.write_bad_certificates(tmp_path, ca, "orders")
    for key in (bad.rogue_key, bad.expired_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def _run_cli(*args: str, env: dict[str, str] | None = None) -> None:
    assert certs.main(list(args), Env(env or {})) == 0


def test_a_rerun_keeps_the_ca_and_valid_certificates(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    _run_cli("--dir", str(directory))
    first = _serials(directory)
    _run_cli("--dir", str(directory))
    assert _serials(directory) == first


def test_rotate_issues_every_service_certificate_under_the_same_ca(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    _run_cli(env={"MESH_CERTS_DIR": str(directory)})
    first = _serials(directory)
    _run_cli("--rotate", env={"MESH_CERTS_DIR": str(directory)})
    second = _serials(directory)
    assert second["ca"] == first["ca"]
    for service in certs.SERVICES:
        assert second[service] != first[service], service
        certs.load(directory, service).cert.verify_directly_issued_by(
            certs.load(directory, "ca").cert
        )


def test_missing_expired_and_expiring_certificates_are_issued_again(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    ca = certs.load(directory, "ca")
    now = dt.datetime.now(dt.UTC)
    certs.key_path(directory, "gateway").unlink()
    certs.cert_path(directory, "gateway").unlink()
    certs.write_issued(
        directory,
        "orders",
        certs.issue(ca, "orders", not_before=now - dt.timedelta(days=2), not_after=now),
    )
    # A quarter of its lifetime left, less a minute: due.
    certs.write_issued(
        directory,
        "payments",
        certs.issue(
            ca,
            "payments",
            not_before=now - dt.timedelta(hours=18, minutes=1),
            not_after=now + dt.timedelta(hours=5, minutes=59),
        ),
    )
    kept = {s: certs.load(directory, s).cert.serial_number for s in ("catalog", "inventory")}
    outcomes = {o.name: o.action for o in certs.ensure(directory)}
    assert outcomes["ca"] == "kept"
    assert outcomes["gateway"] == "created"
    assert outcomes["orders"] == "replaced (expired)"
    assert outcomes["payments"] == "renewed (expiring)"
    assert outcomes["catalog"] == outcomes["inventory"] == outcomes["notifications"] == "kept"
    for service, serial in kept.items():
        assert certs.load(directory, service).cert.serial_number == serial
    assert certs.load(directory, "orders").cert.not_valid_after_utc > now


def test_a_new_ca_reissues_every_service_certificate(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    first = _serials(directory)
    certs.key_path(directory, "ca").unlink()
    certs.cert_path(directory, "ca").unlink()
    outcomes = {o.name: o.action for o in certs.ensure(directory)}
    assert outcomes["ca"] == "created"
    assert all(outcomes[s] == "replaced (not signed by the current CA)" for s in certs.SERVICES)
    second = _serials(directory)
    assert all(second[name] != first[name] for name in first)


def test_days_come_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    def lifetime(directory: Path) -> dt.timedelta:
        cert = certs.load(directory, "catalog").cert
        return cert.not_valid_after_utc - cert.not_valid_before_utc

    _run_cli("--dir", str(tmp_path / "a"), "--days", "3")
    assert dt.timedelta(days=3) <= lifetime(tmp_path / "a") < dt.timedelta(days=3, hours=1)
    _run_cli("--dir", str(tmp_path / "b"), env={"MESH_CERT_DAYS": "0.5"})
    assert dt.timedelta(hours=12) <= lifetime(tmp_path / "b") < dt.timedelta(hours=13)


@pytest.mark.parametrize("days", ["0", "-1", "nan"])
def test_a_bad_lifetime_is_refused(tmp_path: Path, days: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        certs.main(["--dir", str(tmp_path), "--days", days], Env({}))
    assert exit_info.value.code == 2
    assert not list(tmp_path.glob("*.pem"))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_owners_get_their_service_files_and_the_ca_key_stays_private(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    _run_cli("--dir", str(directory), "--owner", "payments=1000")
    before = _serials(directory)
    _run_cli("--dir", str(directory), "--owner", "payments=1000", "--owner", "inventory=65532")
    assert _serials(directory) == before  # kept files change owner, not content
    assert certs.key_path(directory, "inventory").stat().st_uid == 65532
    _run_cli("--dir", str(directory), "--rotate", "--owner", "payments=1000")
    for path in (certs.key_path(directory, "payments"), certs.cert_path(directory, "payments")):
        assert path.stat().st_uid == 1000  # new files too
    assert stat.S_IMODE(certs.key_path(directory, "payments").stat().st_mode) == 0o600
    assert certs.key_path(directory, "ca").stat().st_uid == 0
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755


@pytest.mark.parametrize("entry", ["payments", "payments=node", "bank=1000", "=1000"])
def test_a_bad_owner_is_refused(tmp_path: Path, entry: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        certs.main(["--dir", str(tmp_path), "--owner", entry], Env({}))
    assert exit_info.value.code == 2
    assert not list(tmp_path.glob("*.pem"))


def test_no_private_key_is_tracked_by_git() -> None:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    marker = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
    offenders = []
    for name in listed.decode().split("\0"):
        path = REPO_ROOT / name
        if not name or not path.is_file():
            continue
        if name.endswith(".key") or marker.search(path.read_bytes()):
            offenders.append(name)
    assert offenders == []


# --- a real mTLS handshake ---------------------------------------------------------

WHOAMI = "/test.mesh.v1.Certs/WhoAmI"


async def _whoami(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """Answers with the caller's identity as the later authorization will read it."""
    pem = next(iter(context.auth_context()["x509_pem_cert"]))
    return certs.identity_of(pem).encode()


@dataclass(frozen=True)
class Mesh:
    directory: Path
    bad: certs.BadCertificates
    port: int

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def credentials(self, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.read(certs.cert_path(self.directory, "ca")),
            private_key=None if key is None else self.read(key),
            certificate_chain=None if cert is None else self.read(cert),
        )


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    bad = certs.write_bad_certificates(tmp_path / "bad", certs.load(directory, "ca"), "gateway")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.mesh.v1.Certs", {"WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami)}
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [
            (
                certs.key_path(directory, "catalog").read_bytes(),
                certs.cert_path(directory, "catalog").read_bytes(),
            )
        ],
        root_certificates=certs.cert_path(directory, "ca").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield Mesh(directory=directory, bad=bad, port=port)
    finally:
        await server.stop(None)


async def _check(
    mesh: Mesh, credentials: grpc.ChannelCredentials, *, target_name: str | None = None
) -> str:
    """A health check, then WhoAmI; returns the identity the server saw."""
    options = [] if target_name is None else [("grpc.ssl_target_name_override", target_name)]
    async with grpc.aio.secure_channel(f"127.0.0.1:{mesh.port}", credentials, options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        answer = await channel.unary_unary(WHOAMI, None, None)(b"", timeout=TIMEOUT)
        assert isinstance(answer, bytes)
        return answer.decode()


@pytest.mark.parametrize("target_name", [None, "catalog", "localhost"])
async def test_a_client_with_a_shop_certificate_is_served(
    mesh: Mesh, target_name: str | None
) -> None:
    credentials = mesh.credentials(
        certs.cert_path(mesh.directory, "gateway"), certs.key_path(mesh.directory, "gateway")
    )
    assert await _check(mesh, credentials, target_name=target_name) == "spiffe://shop.local/gateway"


async def test_a_client_without_a_certificate_is_refused(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _check(mesh, mesh.credentials(None, None))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_with_a_rogue_certificate_is_refused(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _check(mesh, mesh.credentials(mesh.bad.rogue_cert, mesh.bad.rogue_key))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_with_an_expired_certificate_is_refused(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _check(mesh, mesh.credentials(mesh.bad.expired_cert, mesh.bad.expired_key))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_does_not_accept_a_server_certificate_for_another_name(
    mesh: Mesh,
) -> None:
    credentials = mesh.credentials(
        certs.cert_path(mesh.directory, "gateway"), certs.key_path(mesh.directory, "gateway")
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _check(mesh, credentials, target_name="payments")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
