"""Fixtures of the mTLS and authorization tests: certificates in tmp_path and
the real catalog server serving mTLS on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from catalog.config import CatalogConfig
from catalog.server import CatalogServer, create_server
from mesh.certs import BadCertificates, cert_path, ensure, key_path, load, write_bad_certificates
from mesh.interceptors import FaultConfig
from mesh.policy import DEFAULT_POLICY_FILE, load_policy
from mesh.server import ServerConfig, start
from mesh.tls import MeshSecurity
from tracing.interceptors import server_interceptors


@dataclass
class Certs:
    directory: Path
    bad: BadCertificates  # for `orders`: signed by a rogue CA, and expired

    def ca(self) -> bytes:
        return cert_path(self.directory, "ca").read_bytes()

    def pair(self, name: str) -> tuple[bytes, bytes]:
        """(key, certificate) of `name` in the certificates folder."""
        return key_path(self.directory, name).read_bytes(), cert_path(
            self.directory, name
        ).read_bytes()

    def security(self, service: str) -> MeshSecurity:
        return MeshSecurity(
            enabled=True,
            certs_dir=self.directory,
            service=service,
            policy=load_policy(DEFAULT_POLICY_FILE),
        )


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    directory = tmp_path / "certs"
    ensure(directory)
    bad = write_bad_certificates(tmp_path / "bad", load(directory, "ca"), "orders")
    return Certs(directory, bad)


@dataclass
class MtlsCatalog:
    server: CatalogServer
    exporter: InMemorySpanExporter

    @property
    def port(self) -> int:
        return self.server.mesh.port

    def dial(
        self,
        key: bytes | None,
        cert: bytes | None,
        ca: bytes | None,
        server_name: str = "catalog",
    ) -> grpc.aio.Channel:
        """A channel to the catalog: plaintext without `ca`, else TLS presenting
        `cert` (if any) and asking the server's certificate for `server_name`."""
        target = f"127.0.0.1:{self.port}"
        if ca is None:
            return grpc.aio.insecure_channel(target)
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        options = [("grpc.ssl_target_name_override", server_name)]
        return grpc.aio.secure_channel(target, credentials, options=options)


DialAs = Callable[..., grpc.aio.Channel]


@pytest.fixture
async def mtls_catalog(tmp_path: Path, certs: Certs) -> AsyncIterator[MtlsCatalog]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = CatalogConfig(
        server=ServerConfig(
            listen_addr="127.0.0.1:0",
            grace_s=0.0,
            drain_s=0.0,
            faults=FaultConfig(),
            security=certs.security("catalog"),
        ),
        db_path=str(tmp_path / "catalog.db"),
        page_token_key=b"k" * 32,
        log_level="INFO",
    )
    server = await create_server(config, server_interceptors(provider))
    try:
        await start(server.mesh)
        yield MtlsCatalog(server, exporter)
    finally:
        await server.mesh.server.stop(None)
        await server.store.close()
        provider.shutdown()
