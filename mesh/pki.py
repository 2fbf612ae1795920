"""The mesh's identities as X.509: a demo certificate authority and the
certificates it issues, one per service, with no files involved (mesh.certs
writes and reads them).

Each service's identity is a SPIFFE ID, `spiffe://shop.local/<service>`, carried
as the one URI subject alternative name of its certificate; `identity_of` reads
it back (the authorization code asks it who is calling). A service certificate
also names `<service>` (its compose host name), `localhost` and 127.0.0.1 as
DNS and IP SANs, so a client checks the server's name both in compose and in
local mode, and it is good for both ends of a connection (serverAuth and
clientAuth). Every key is ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BACKDATE",
    "CA_LIFETIME",
    "DEFAULT_LIFETIME",
    "SERVICES",
    "TRUST_DOMAIN",
    "CertificateError",
    "Issued",
    "as_certificate",
    "checked_service",
    "create_ca",
    "identity_of",
    "issue",
    "service_of",
    "spiffe_id",
    "utcnow",
]

TRUST_DOMAIN = "shop.local"
SERVICES = ("gateway", "catalog", "orders", "inventory", "payments", "notifications")
DEFAULT_LIFETIME = dt.timedelta(days=1)
CA_LIFETIME = dt.timedelta(days=365)
ORGANIZATION = "shopmesh demo"
# Certificates start a little in the past so a peer whose clock is slightly
# behind does not see them as not yet valid.
BACKDATE = dt.timedelta(minutes=5)

# A service name is a DNS label: it is a compose host name and a SPIFFE path.
_SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class CertificateError(ValueError):
    """A certificate lacks what the mesh needs (one SPIFFE ID of our trust domain)."""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def spiffe_id(service: str) -> str:
    """The identity of `service`: `spiffe://shop.local/<service>`."""
    return f"spiffe://{TRUST_DOMAIN}/{checked_service(service)}"


def service_of(identity: str) -> str:
    """The service an identity of this trust domain names (`catalog` for
    `spiffe://shop.local/catalog`); `CertificateError` for any other."""
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    name = identity.removeprefix(prefix)
    if name == identity or not _SERVICE_NAME.match(name):
        raise CertificateError(f"{identity!r} is not an identity of {TRUST_DOMAIN}")
    return name


def identity_of(cert: x509.Certificate | bytes | str) -> str:
    """The SPIFFE ID in a certificate (an object, PEM or DER).

    SPIFFE allows exactly one URI SAN in an X.509 SVID; a certificate with none,
    with several, or with one outside our trust domain raises `CertificateError`.
    It does not check the signature or the dates: the TLS handshake did that.
    """
    certificate = as_certificate(cert)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise CertificateError("the certificate has no subject alternative names") from None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    spiffe = [uri for uri in uris if uri.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise CertificateError(f"the certificate has {len(spiffe)} SPIFFE IDs, not one")
    service_of(spiffe[0])  # raises for another trust domain or a malformed path
    return spiffe[0]


def create_ca(
    *,
    common_name: str = "shopmesh demo CA",
    lifetime: dt.timedelta = CA_LIFETIME,
    now: dt.datetime | None = None,
) -> Issued:
    """A self-signed CA that may sign service certificates but no other CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = (now or utcnow()) - BACKDATE
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert=cert, key=key)


def issue(
    ca: Issued,
    service: str,
    *,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Issued:
    """A certificate for `service` signed by `ca`, valid for `lifetime` from now.

    `not_before` and `not_after` override the dates (both may be in the past:
    tests make expired certificates so). Otherwise the certificate ends no
    later than the CA does.
    """
    checked_service(service)
    if lifetime <= dt.timedelta(0):
        raise ValueError(f"a certificate's lifetime must be positive, got {lifetime}")
    current = now or utcnow()
    start = not_before if not_before is not None else current - BACKDATE
    if not_after is not None:
        end = not_after
    else:
        end = min(current + lifetime, ca.cert.not_valid_after_utc)
    if end <= start:
        raise ValueError(f"not_after ({end}) must be after not_before ({start})")
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, service),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(spiffe_id(service)),
                    x509.DNSName(service),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert=cert, key=key)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def checked_service(service: str) -> str:
    if not _SERVICE_NAME.match(service):
        raise ValueError(f"{service!r} is not a service name (a lower-case DNS label)")
    return service


def as_certificate(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode() if isinstance(cert, str) else cert
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
