"""Mutual TLS between the shop's services: configuration, credentials, peer identity.

On unless `MESH_MTLS=off` (the default is `MTLS_DEFAULT`, in this one place).
With it on, every Python service

- serves with credentials that require a client certificate from the shop's
  CA and reload the service's own certificate and key when `make certs`
  replaces them, without a restart (`server_credentials`);
- calls other services presenting its certificate and checking that the
  server's certificate names the service it meant to call
  (`channel_credentials`, `channel_options`);
- learns who calls it from the certificate the caller presented
  (`peer_identity`), which `mesh.authz` checks against `mesh/policy.yaml`.

Environment:

- MESH_MTLS (`on`): `on` or `off`; `off` is for learning, never for a deployment.
- MESH_CERTS_DIR (`.run/certs`): where `python -m mesh.certs` wrote
  `ca.pem` and `<service>.pem`/`<service>.key`.
- MESH_SERVICE_IDENTITY: the service this process is, as a name (`catalog`)
  or its SPIFFE ID (`spiffe://shop.local/catalog`). When unset,
  OTEL_SERVICE_NAME is used if it is exactly one of the shop's services
  (compose sets it so); a display name such as `orders-canary` is not
  guessed from, and with mTLS on the service refuses to start naming both.

How a client checks the server: a certificate names its service as a DNS SAN
(`catalog`) besides `localhost` and 127.0.0.1, which every certificate
carries. So a client that knows which service it calls sets
`grpc.ssl_target_name_override` to that name, and only that service's
certificate passes the hostname check, whatever address it dialled (a
loopback port in local mode). The service is the `service` given to
`Channels.get`, or else the target's host when it is a service name (compose:
`catalog:50051`). A target that is only an address (`127.0.0.1:50051`)
without a service is checked against the address: any of the shop's
certificates passes, and the channel logs a warning saying so.

A client's own certificate is read into the credentials of the channels
`mesh.channels.Channels` makes; when `make certs` replaces it, Channels
makes new channels with the new one (and closes the old ones once their
calls are done), so a client never presents a certificate that has expired
in its files' place.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mesh.certs import (
    DEFAULT_DIR,
    SERVICES,
    CertificateError,
    cert_path,
    certs_dir_from_env,
    identity_of,
    key_path,
    service_of,
    spiffe_id,
)
from mesh.config import ConfigError, Env
from mesh.policy import Policy, load_policy_from_env

__all__ = [
    "MTLS_DEFAULT",
    "CertificateReloader",
    "MeshSecurity",
    "channel_credentials",
    "channel_options",
    "expected_service",
    "files_stamp",
    "peer_identity",
    "server_credentials",
]

log = logging.getLogger(__name__)

# The one place Python keeps the default; inventory (Go) and payments
# (TypeScript) keep the same one, and tests/contract/test_startup.py checks that all agree.
MTLS_DEFAULT = True
CA_NAME = "ca"
# A writer replaces a key, then its certificate: a reader between the two
# sees a pair that does not match and reads again, this often, this far apart.
_PAIR_ATTEMPTS = 5
_PAIR_PAUSE_S = 0.02


@dataclass(frozen=True)
class MeshSecurity:
    """Whether mTLS (and with it authorization) is on, and with what."""

    enabled: bool = False
    certs_dir: Path = DEFAULT_DIR
    service: str | None = None  # this process's service; set when enabled
    policy: Policy | None = None  # set when enabled

    @classmethod
    def from_env(cls, env: Env) -> MeshSecurity:
        enabled = env.flag("MESH_MTLS", MTLS_DEFAULT)
        certs_dir = certs_dir_from_env(env)
        if not enabled:
            return cls(enabled=False, certs_dir=certs_dir)
        service = _service_from_env(env)
        for path in (cert_path(certs_dir, CA_NAME), *_pair_paths(certs_dir, service)):
            if not path.is_file():
                raise ConfigError(
                    f"MESH_MTLS is on but {path} is missing (MESH_CERTS_DIR={certs_dir}; "
                    "`make certs` makes it)"
                )
        return cls(
            enabled=True, certs_dir=certs_dir, service=service, policy=load_policy_from_env(env)
        )

    @property
    def identity(self) -> str | None:
        return None if self.service is None else spiffe_id(self.service)


def _service_from_env(env: Env) -> str:
    raw = env.optional("MESH_SERVICE_IDENTITY")
    if raw is not None:
        name = raw
        if raw.startswith("spiffe://"):
            try:
                name = service_of(raw)
            except CertificateError as error:
                raise ConfigError(f"MESH_SERVICE_IDENTITY: {error}") from None
        if name not in SERVICES:
            raise ConfigError(
                f"MESH_SERVICE_IDENTITY must be one of {', '.join(SERVICES)}, got {raw!r}"
            )
        return name
    otel = env.optional("OTEL_SERVICE_NAME")
    if otel in SERVICES:
        return str(otel)
    raise ConfigError(
        "MESH_MTLS is on: set MESH_SERVICE_IDENTITY to this service's name "
        f"({', '.join(SERVICES)}); OTEL_SERVICE_NAME is {otel!r}, not one of them"
    )


def _pair_paths(directory: Path, service: str) -> tuple[Path, Path]:
    return cert_path(directory, service), key_path(directory, service)


FilesStamp = tuple[tuple[int, int, int], ...]


def files_stamp(directory: Path, service: str) -> FilesStamp:
    """What changes when `make certs` replaces the CA or `service`'s pair:
    each file's inode, size and modification time (three `stat`s, no reads)."""
    paths = (cert_path(directory, CA_NAME), *_pair_paths(directory, service))
    stats = [os.stat(path) for path in paths]
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def _read_pair(directory: Path, service: str) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) of `service`, read until they belong together."""
    certificate, key = _pair_paths(directory, service)
    problem = ""
    for attempt in range(_PAIR_ATTEMPTS):
        if attempt:
            time.sleep(_PAIR_PAUSE_S)
        key_pem, cert_pem = key.read_bytes(), certificate.read_bytes()
        try:
            private = serialization.load_pem_private_key(key_pem, None)
            public = x509.load_pem_x509_certificate(cert_pem).public_key()
        except ValueError as error:  # half of a pair, or garbage
            problem = str(error)
            continue
        if private.public_key() == public:
            return key_pem, cert_pem
        problem = f"{key} does not belong to {certificate}"
    raise ValueError(problem)


# --- servers ------------------------------------------------------------------


class CertificateReloader:
    """The certificate configuration fetcher of a server's dynamic credentials.

    gRPC calls it before each new handshake; it compares the files' inode,
    size and modification time with what it last loaded (three `stat`s) and
    returns a new configuration only when one changed. A pair caught between
    its key and its certificate being replaced is read again; if it still does
    not match, the server keeps the configuration it has and tries again at
    the next handshake. Connections already open are not touched.
    """

    def __init__(self, directory: Path, service: str) -> None:
        self._directory = directory
        self._service = service
        self._seen: FilesStamp | None = None
        self.loads = 0  # configurations handed to gRPC, for tests and logs

    def _stamp(self) -> FilesStamp:
        return files_stamp(self._directory, self._service)

    def initial(self) -> Any:
        """The configuration to start with; raises if the files are unusable."""
        stamp = self._stamp()
        configuration = self._load()
        self._seen = stamp
        return configuration

    def __call__(self) -> Any:
        try:
            stamp = self._stamp()
            if stamp == self._seen:
                return None
            configuration = self._load()
        except (OSError, ValueError) as error:
            # Never raise into gRPC's handshake: keep the current certificate.
            log.warning("keeping the current certificate of %s: %s", self._service, error)
            return None
        self._seen = stamp  # taken before reading: a change since is seen next time
        log.info("loaded a new certificate for %s", self._service)
        return configuration

    def _load(self) -> Any:
        key_pem, cert_pem = _read_pair(self._directory, self._service)
        ca_pem = cert_path(self._directory, CA_NAME).read_bytes()
        self.loads += 1
        return grpc.ssl_server_certificate_configuration(
            [(key_pem, cert_pem)], root_certificates=ca_pem
        )


def server_credentials(
    security: MeshSecurity,
) -> tuple[grpc.ServerCredentials, CertificateReloader]:
    """Credentials that require a client certificate from the shop's CA and
    reload this service's certificate when its files change."""
    if not security.enabled or security.service is None:
        raise ValueError("server_credentials needs mTLS on and a service")
    reloader = CertificateReloader(security.certs_dir, security.service)
    try:
        initial = reloader.initial()
    except ValueError as error:
        raise ConfigError(f"MESH_MTLS is on but the certificate is unusable: {error}") from None
    credentials = grpc.dynamic_ssl_server_credentials(
        initial, reloader, require_client_authentication=True
    )
    return credentials, reloader


# --- clients ------------------------------------------------------------------


def channel_credentials(security: MeshSecurity) -> grpc.ChannelCredentials:
    """This service's certificate for the client end, and the shop's CA to check servers."""
    if not security.enabled or security.service is None:
        raise ValueError("channel_credentials needs mTLS on and a service")
    try:
        key_pem, cert_pem = _read_pair(security.certs_dir, security.service)
    except ValueError as error:
        raise ConfigError(f"MESH_MTLS is on but the certificate is unusable: {error}") from None
    return grpc.ssl_channel_credentials(
        root_certificates=cert_path(security.certs_dir, CA_NAME).read_bytes(),
        private_key=key_pem,
        certificate_chain=cert_pem,
    )


def expected_service(target: str, service: str | None = None) -> str | None:
    """The service a channel to `target` must reach: `service`, or the
    target's host when that is one of the shop's services, else None."""
    if service is not None:
        if service not in SERVICES:
            raise ValueError(f"{service!r} is not one of the shop's services")
        return service
    address = target
    if "://" in address:  # dns:///catalog:50051, dns://resolver/catalog:50051
        address = address.split("://", 1)[1].partition("/")[2] or address
    address = address.split(",", 1)[0]
    host = address.rpartition(":")[0] if ":" in address else address
    return host if host in SERVICES else None


def channel_options(target: str, service: str | None = None) -> Sequence[tuple[str, Any]]:
    """Channel arguments that make the TLS hostname check ask for `service`'s DNS SAN."""
    expected = expected_service(target, service)
    if expected is None:
        log.warning(
            "mTLS channel to %s: no service named, so any of the shop's certificates "
            "is accepted (pass the service to Channels.get)",
            target,
        )
        return ()
    return (("grpc.ssl_target_name_override", expected),)


# --- peers --------------------------------------------------------------------


def peer_identity(context: Any) -> str | None:
    """The SPIFFE ID in the certificate the caller presented, or None (plaintext,
    or a certificate without exactly one identity of the shop's trust domain).

    `context` is a servicer context; its `auth_context()` carries the peer's
    certificate as `x509_pem_cert` on a TLS connection.
    """
    certificates = (context.auth_context() or {}).get("x509_pem_cert") or ()
    if not certificates:
        return None
    return _identity_in(certificates[0])


# Parsing a certificate takes about 40 µs, on every call of every connection;
# the PEM of a connection's peer is the same bytes each time, and a server
# sees a handful of callers (plus their rotated certificates).
@functools.lru_cache(maxsize=256)
def _identity_in(pem: bytes) -> str | None:
    try:
        return identity_of(pem)
    except (CertificateError, ValueError):
        return None
