"""The gateway's configuration, read once from the environment.

- GRPC_LISTEN_ADDR (0.0.0.0:8080): where the gateway listens.
- GATEWAY_ROUTES_FILE (services/gateway/routes.yaml): the routes, a path
  relative to the repository root, or absolute.
- GATEWAY_UPSTREAM_<HOST>: replaces the target of every route whose upstream
  is `<host>:<port>` (HOST upper-cased, other characters as `_`); local mode's
  rewritten addresses reach the routes this way.
- GATEWAY_MAX_MESSAGE_BYTES (4 MiB): the largest message in either direction;
  a larger one is RESOURCE_EXHAUSTED.
- GATEWAY_DEFAULT_TIMEOUT_SECONDS (0: none): the deadline applied upstream to a
  call that came without one.
- GATEWAY_JWT_KEY (a public demo key): the HS256 secret, at least 32 bytes.
- GATEWAY_JWT_ISSUER (shopmesh-demo), GATEWAY_JWT_AUDIENCE (shopmesh): the
  required `iss` and `aud`.
- GATEWAY_API_KEYS (one demo key): static API keys, `key=subject,key2=subject2`,
  or `none`.
- GATEWAY_RATE_PER_SECOND (100; 0 turns rate limiting off) and
  GATEWAY_RATE_BURST (200): each caller's token bucket.
- GATEWAY_ACCESS_LOG (true): one JSON line per call.
- GATEWAY_TLS_CERT_FILE, GATEWAY_TLS_KEY_FILE (unset): a certificate chain
  and its key in PEM; set both and the public listener serves TLS (asking no
  client certificate) instead of plaintext. Read at start.
- LOG_LEVEL (INFO).

plus the server's own (SHUTDOWN_*, FAULT_*) from `mesh.server.ServerConfig`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.routes import Route, load_routes
from mesh.config import ConfigError, Env
from mesh.server import ServerConfig
from mesh.traffic import TrafficPolicy
from mesh.traffic_file import load_traffic_from_env

# services/gateway/gateway/config.py -> the repository root (or the image's /app).
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_ROUTES_FILE = "services/gateway/routes.yaml"
TLS_CERT_VARIABLE = "GATEWAY_TLS_CERT_FILE"
TLS_KEY_VARIABLE = "GATEWAY_TLS_KEY_FILE"

# Demo defaults, public in this repository and therefore no secret at all:
# fine for `make up` on a laptop, never for anything reachable by others.
# Set GATEWAY_JWT_KEY and GATEWAY_API_KEYS in any real deployment.
DEMO_JWT_KEY = "shopmesh-demo-jwt-key-public-never-use-in-production"
DEMO_API_KEYS = "shopmesh-demo-api-key=cus-demo"

MIN_JWT_KEY_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
# Keys travel in `authorization: Bearer <key>`; the characters of a base64url
# token minus '.', so a key is never mistaken for a JWT (three dotted parts).
_API_KEY = re.compile(r"[A-Za-z0-9_-]{16,256}")
# A subject goes upstream as a metadata value and into logs: printable ASCII
# without spaces, so neither can be forged or split.
SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}")


@dataclass(frozen=True)
class AuthConfig:
    jwt_key: bytes
    issuer: str
    audience: str
    api_keys: Mapping[str, str]  # key -> subject

    @classmethod
    def from_env(cls, env: Env) -> AuthConfig:
        key = env.text("GATEWAY_JWT_KEY", DEMO_JWT_KEY).encode()
        if len(key) < MIN_JWT_KEY_BYTES:
            raise ConfigError(f"GATEWAY_JWT_KEY must be at least {MIN_JWT_KEY_BYTES} bytes long")
        return cls(
            jwt_key=key,
            issuer=env.text("GATEWAY_JWT_ISSUER", "shopmesh-demo"),
            audience=env.text("GATEWAY_JWT_AUDIENCE", "shopmesh"),
            api_keys=parse_api_keys(env.text("GATEWAY_API_KEYS", DEMO_API_KEYS)),
        )


def parse_api_keys(raw: str, variable: str = "GATEWAY_API_KEYS") -> dict[str, str]:
    """`key=subject,key2=subject2` into a dict; `none` is no keys at all."""
    if raw.strip().lower() == "none":
        return {}
    keys: dict[str, str] = {}
    for number, item in enumerate(raw.split(","), start=1):
        key, sep, subject = (part.strip() for part in item.partition("="))
        # The message never repeats a key: it is a secret.
        if not sep or not _API_KEY.fullmatch(key):
            raise ConfigError(
                f"{variable} entry {number} must be key=subject with a key of 16 to 256 "
                "letters, digits, '-' or '_'"
            )
        if not SUBJECT.fullmatch(subject):
            raise ConfigError(f"{variable} entry {number} has an invalid subject {subject!r}")
        if key in keys:
            raise ConfigError(f"{variable} entry {number} repeats a key")
        keys[key] = subject
    return keys


@dataclass(frozen=True)
class RateConfig:
    per_second: float  # 0: no rate limiting
    burst: int

    @classmethod
    def from_env(cls, env: Env) -> RateConfig:
        return cls(
            per_second=env.number("GATEWAY_RATE_PER_SECOND", 100.0, minimum=0.0),
            burst=env.integer("GATEWAY_RATE_BURST", 200, minimum=1),
        )

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


@dataclass(frozen=True)
class PublicTls:
    """The certificate the public listener serves TLS with."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_env(cls, env: Env) -> PublicTls | None:
        """None when neither variable is set: the listener stays plaintext."""
        cert, key = env.optional(TLS_CERT_VARIABLE), env.optional(TLS_KEY_VARIABLE)
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise ConfigError(
                f"{TLS_CERT_VARIABLE} and {TLS_KEY_VARIABLE} go together: set both or neither"
            )
        cert_pem, key_pem = _read(TLS_CERT_VARIABLE, cert), _read(TLS_KEY_VARIABLE, key)
        try:
            public = x509.load_pem_x509_certificate(cert_pem).public_key()
        except ValueError:
            raise ConfigError(f"{TLS_CERT_VARIABLE}: {cert} holds no PEM certificate") from None
        try:
            private = serialization.load_pem_private_key(key_pem, None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{TLS_KEY_VARIABLE}: {key} holds no unencrypted PEM private key"
            ) from None
        if private.public_key() != public:
            raise ConfigError(f"{TLS_KEY_VARIABLE}: {key} is not the key of {cert}")
        return cls(cert_pem=cert_pem, key_pem=key_pem)


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{variable}: cannot read {path}: {error.strerror}") from None


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    routes: tuple[Route, ...]
    max_message_bytes: int
    default_timeout_s: float | None  # None: a call without a deadline gets none upstream
    auth: AuthConfig
    rate: RateConfig
    access_log: bool
    log_level: str
    public_tls: PublicTls | None = None  # None: the public listener is plaintext
    # How upstream channels retry, time out and break (mesh/traffic.yaml).
    traffic: TrafficPolicy | None = None

    @classmethod
    def from_env(cls, env: Env) -> GatewayConfig:
        timeout = env.number("GATEWAY_DEFAULT_TIMEOUT_SECONDS", 0.0, minimum=0.0)
        routes = upstream_overrides(load_routes(routes_file(env)), env)
        called = [route.mesh_service for route in routes if route.mesh_service]
        return cls(
            server=ServerConfig.from_env(env, default_addr="0.0.0.0:8080"),
            routes=routes,
            max_message_bytes=env.integer("GATEWAY_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, minimum=1),
            default_timeout_s=timeout or None,
            auth=AuthConfig.from_env(env),
            rate=RateConfig.from_env(env),
            access_log=env.flag("GATEWAY_ACCESS_LOG", True),
            log_level=env.log_level(),
            public_tls=PublicTls.from_env(env),
            traffic=load_traffic_from_env(env, called),
        )


def routes_file(env: Env) -> Path:
    path = Path(env.text("GATEWAY_ROUTES_FILE", DEFAULT_ROUTES_FILE))
    return path if path.is_absolute() else REPO_ROOT / path


def override_variable(host: str) -> str:
    """`GATEWAY_UPSTREAM_<HOST>`: the variable that replaces targets on `host`."""
    return "GATEWAY_UPSTREAM_" + re.sub(r"[^A-Z0-9]", "_", host.upper())


def upstream_overrides(routes: tuple[Route, ...], env: Env) -> tuple[Route, ...]:
    """Routes whose `host:port` upstream has a GATEWAY_UPSTREAM_<HOST> variable get its value.

    compose.yaml names upstreams by service (`catalog:50051`); local mode runs
    the same services on loopback and rewrites only environment variables, so
    a variable per upstream host is how a rewritten address reaches the
    routes file's entries without a second copy of that file.
    """
    result = []
    for route in routes:
        host, sep, port = route.upstream.rpartition(":")
        if sep and host and port.isdigit() and "/" not in host:
            variable = override_variable(host)
            if env.optional(variable) is not None:
                route = replace(route, upstream=env.address(variable))
        result.append(route)
    return tuple(result)
