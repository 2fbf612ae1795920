"""The mesh's identities on disk: the demo CA and one certificate per service
(made by mesh.pki, whose names this module also gives), written, read back,
and made when missing or due.

Layout of the certificates folder (`MESH_CERTS_DIR`, by default `.run/certs`
at the repository root: git-ignored, kept out of image build contexts, kept
by `make down`, removed with the rest of `.run` by `make clean`, after which
`make certs` makes a new CA):

    ca.pem, ca.key                 the shop's CA (certificate, private key)
    <service>.pem, <service>.key   each service's certificate and private key
    .lock                          held while `make certs` writes

Certificates and keys are PEM; keys are PKCS#8, unencrypted, mode 0600, in a
folder of mode 0700. Every file is written to a temporary file beside it and
renamed into place, so a reader sees the old file or the new one, never half
of one. A service's key is replaced before its certificate: a reloader that
sees a certificate whose public key does not match the key file should read
both again.

`python -m mesh.certs [--dir DIR] [--days N] [--rotate]` (`make certs`)
creates what is missing and keeps what is still good: the CA while it is
valid for more than a quarter of its lifetime, a service certificate while it
is signed by that CA and valid for more than a quarter of its lifetime.
`--rotate` issues every service certificate again under the same CA.
`MESH_CERT_DAYS` sets the default lifetime of a service certificate (one day);
the CA lives `CA_LIFETIME`, and no certificate outlives its CA.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.config import ConfigError, Env
from mesh.pki import (
    CA_LIFETIME,
    DEFAULT_LIFETIME,
    SERVICES,
    TRUST_DOMAIN,
    CertificateError,
    Issued,
    checked_service,
    create_ca,
    identity_of,
    issue,
    service_of,
    spiffe_id,
    utcnow,
)

__all__ = [
    "CA_LIFETIME",
    "DEFAULT_DIR",
    "DEFAULT_LIFETIME",
    "SERVICES",
    "TRUST_DOMAIN",
    "BadCertificates",
    "CertificateError",
    "Issued",
    "Outcome",
    "cert_path",
    "certs_dir_from_env",
    "create_ca",
    "ensure",
    "identity_of",
    "issue",
    "key_path",
    "load",
    "service_of",
    "spiffe_id",
    "write_bad_certificates",
    "write_issued",
]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".run" / "certs"
CA_NAME = "ca"
# A certificate is issued again once less than this share of its lifetime is left.
RENEW_FRACTION = 0.25


# --- files -------------------------------------------------------------------


def cert_path(directory: Path, name: str) -> Path:
    """`<directory>/<name>.pem`; `name` is a service or `ca`."""
    return directory / f"{name}.pem"


def key_path(directory: Path, name: str) -> Path:
    """`<directory>/<name>.key`; `name` is a service or `ca`."""
    return directory / f"{name}.key"


def write_issued(directory: Path, name: str, issued: Issued, owner: int | None = None) -> None:
    """Writes `<name>.key` (0600), then `<name>.pem`, each atomically; with
    `owner`, both belong to that user id before they appear under their names."""
    _make_dir(directory)
    _write_atomically(key_path(directory, name), issued.key_pem(), 0o600, owner)
    _write_atomically(cert_path(directory, name), issued.cert_pem(), 0o644, owner)


def load(directory: Path, name: str) -> Issued:
    """Reads `<name>.pem` and `<name>.key`; raises OSError or ValueError if
    either is missing or unreadable, or if they are not a pair."""
    cert = x509.load_pem_x509_certificate(cert_path(directory, name).read_bytes())
    key = serialization.load_pem_private_key(key_path(directory, name).read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path(directory, name)} is not an ECDSA key")
    if key.public_key() != cert.public_key():
        raise ValueError(
            f"{key_path(directory, name)} does not belong to {cert_path(directory, name)}"
        )
    return Issued(cert=cert, key=key)


@dataclass(frozen=True)
class BadCertificates:
    """Paths of the certificates a test presents to be refused."""

    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path
    expired_cert: Path
    expired_key: Path


def write_bad_certificates(
    directory: Path, ca: Issued, service: str = "catalog"
) -> BadCertificates:
    """Writes, for `service`, a certificate from another CA (`rogue-ca.pem`,
    `rogue-<service>.pem/.key`: right identity, wrong issuer) and one from the
    shop's CA that expired an hour ago (`expired-<service>.pem/.key`)."""
    rogue_ca = create_ca(common_name="rogue CA")
    rogue = issue(rogue_ca, service)
    now = utcnow()
    expired = issue(
        ca, service, not_before=now - dt.timedelta(days=2), not_after=now - dt.timedelta(hours=1)
    )
    _make_dir(directory)
    _write_atomically(cert_path(directory, "rogue-ca"), rogue_ca.cert_pem(), 0o644)
    write_issued(directory, f"rogue-{service}", rogue)
    write_issued(directory, f"expired-{service}", expired)
    return BadCertificates(
        rogue_ca=cert_path(directory, "rogue-ca"),
        rogue_cert=cert_path(directory, f"rogue-{service}"),
        rogue_key=key_path(directory, f"rogue-{service}"),
        expired_cert=cert_path(directory, f"expired-{service}"),
        expired_key=key_path(directory, f"expired-{service}"),
    )


# --- make what is missing ------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What `ensure` did to one certificate: `kept` or why it issued a new one."""

    name: str
    action: str
    not_after: dt.datetime


def ensure(
    directory: Path,
    *,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
    rotate: bool = False,
    services: Sequence[str] = SERVICES,
    now: dt.datetime | None = None,
    owners: Mapping[str, int] | None = None,
) -> list[Outcome]:
    """Makes the CA and each service's certificate that is missing or due,
    keeping the rest; with `rotate`, issues every service certificate again.

    `owners` maps a service to the user id its container runs as (compose:
    a non-root user per image, and a key is readable by its owner only). Each
    such service's files are given to that user, kept ones too, and the
    folder becomes 0755 so those users can reach them; the CA's key stays
    the writer's alone.

    Holds a lock on `<directory>/.lock`, so two runs at once (`make up` and a
    test, say) do not make two CAs.
    """
    owners = dict(owners or {})
    for service in owners:
        checked_service(service)
    current = now or utcnow()
    outcomes: list[Outcome] = []
    with _locked(directory):
        ca, reason = _current(directory, CA_NAME, None, current)
        if ca is None:
            ca = create_ca(now=current)
            write_issued(directory, CA_NAME, ca)
        outcomes.append(Outcome(CA_NAME, reason, ca.cert.not_valid_after_utc))
        for service in services:
            issued, reason = _current(directory, service, ca, current)
            owner = owners.get(service)
            if issued is None or rotate:
                issued = issue(ca, service, lifetime=lifetime, now=current)
                write_issued(directory, service, issued, owner)
                reason = "rotated" if reason == "kept" else reason
            elif owner is not None:
                for path in (key_path(directory, service), cert_path(directory, service)):
                    os.chown(path, owner, -1)
            outcomes.append(Outcome(service, reason, issued.cert.not_valid_after_utc))
        if owners:
            directory.chmod(0o755)
    return outcomes


def _current(
    directory: Path, name: str, ca: Issued | None, now: dt.datetime
) -> tuple[Issued | None, str]:
    """The certificate on disk and "kept", or None and why it must be issued."""
    if not cert_path(directory, name).exists() and not key_path(directory, name).exists():
        return None, "created"
    try:
        issued = load(directory, name)
    except (OSError, ValueError) as error:
        return None, f"replaced (unreadable: {error})"
    cert = issued.cert
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            return None, "replaced (not signed by the current CA)"
        try:
            if identity_of(cert) != spiffe_id(name):
                return None, "replaced (another identity)"
        except CertificateError as error:
            return None, f"replaced ({error})"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if end <= now:
        return None, "replaced (expired)"
    if start > now:
        return None, "replaced (not yet valid)"
    if end - now < (end - start) * RENEW_FRACTION:
        return None, "renewed (expiring)"
    return issued, "kept"


# --- helpers -------------------------------------------------------------------


def _make_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_atomically(path: Path, data: bytes, mode: int, owner: int | None = None) -> None:
    # mkstemp creates the file 0600, so a key is never readable by others,
    # not even before the chmod; fsync before the rename so a crash leaves
    # the old file or the whole new one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, owner, -1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    _make_dir(directory)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def certs_dir_from_env(env: Env) -> Path:
    """`MESH_CERTS_DIR`, or `DEFAULT_DIR`."""
    raw = env.optional("MESH_CERTS_DIR")
    return Path(raw) if raw else DEFAULT_DIR


def _owners(entries: Sequence[str]) -> dict[str, int]:
    owners = {}
    for entry in entries:
        service, sep, uid = entry.partition("=")
        if not sep or service not in SERVICES or not uid.isdigit():
            raise ConfigError(
                f"--owner must be SERVICE=UID with SERVICE one of {', '.join(SERVICES)}, "
                f"got {entry!r}"
            )
        owners[service] = int(uid)
    return owners


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    parser = argparse.ArgumentParser(
        prog="python -m mesh.certs",
        description="Make the mesh's CA and service certificates that are missing or due.",
    )
    parser.add_argument("--dir", type=Path, help="certificates folder (MESH_CERTS_DIR)")
    parser.add_argument("--days", type=float, help="service certificate lifetime (MESH_CERT_DAYS)")
    parser.add_argument(
        "--rotate", action="store_true", help="issue every service certificate again"
    )
    parser.add_argument(
        "--owner",
        action="append",
        default=[],
        metavar="SERVICE=UID",
        help="give SERVICE's key and certificate to user UID (compose's containers)",
    )
    args = parser.parse_args(argv)
    try:
        owners = _owners(args.owner)
        directory = args.dir or certs_dir_from_env(env)
        days = args.days if args.days is not None else env.number("MESH_CERT_DAYS", 1.0)
        if not (days > 0 and math.isfinite(days)):
            raise ConfigError(f"the lifetime must be a positive number of days, got {days}")
    except ConfigError as error:
        parser.error(str(error))
    outcomes = ensure(
        directory, lifetime=dt.timedelta(days=days), rotate=args.rotate, owners=owners
    )
    for outcome in outcomes:
        print(f"{outcome.name:<14} {outcome.action:<40} until {outcome.not_after:%Y-%m-%d %H:%M}Z")
    print(f"certificates in {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
