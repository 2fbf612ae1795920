"""The cluster's own keys, made fresh for each run: a CA, the API server's
serving certificate, the service-account signing key and the admin token.

The cluster's CA is not the mesh's (`make certs`): the shop's certificates
reach the pods as the Secret mesh-certs, as they would on any cluster."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.kubernetes.cluster.layout import POD_GATEWAY, SERVICE_SUBNET

LIFETIME = dt.timedelta(days=1)
# The `kubernetes` Service's ClusterIP: the first address of the range.
API_SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_SUBNET).hosts()))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def make(directory: Path) -> str:
    """Writes ca.pem, apiserver.pem/.key and sa.pem/.key into `directory`;
    returns the admin token (also written, as the API server's token file)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("shopmesh-k8s-test-ca"))
        .issuer_name(_name("shopmesh-k8s-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName(n)
        for n in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    names += [
        x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", API_SERVICE_IP, POD_GATEWAY)
    ]
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("kube-apiserver"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "apiserver.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write(directory / "apiserver.key", _key_pem(server_key))
    _write(directory / "sa.key", _key_pem(sa_key))
    (directory / "sa.pem").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    token = secrets.token_hex(24)
    # Every component and the test act as one member of system:masters: the
    # test is about the shop on a cluster, not the cluster's RBAC.
    _write(directory / "tokens.csv", f'{token},admin,admin,"system:masters"\n'.encode())
    return token
