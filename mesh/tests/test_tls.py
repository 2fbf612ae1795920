"""mTLS: configuration, both ends' checks, and certificate rotation under load.

Real grpc.aio servers on free loopback ports, certificates from `mesh.certs`
in tmp_path. The matrix of who may call what is in test_authz.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.certs import cert_path, ensure, issue, key_path, load, spiffe_id
from mesh.channels import Channels
from mesh.config import ConfigError, Env
from mesh.identity import SUBJECT_HEADER, trusted_subject
from mesh.interceptors import FaultConfig
from mesh.probe import main as probe_main
from mesh.server import ServerConfig, build_server, start
from mesh.tls import MTLS_DEFAULT, MeshSecurity, expected_service, peer_identity
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

if TYPE_CHECKING:
    from mesh.tests.conftest import Certs, MtlsCatalog

TIMEOUT = 10.0


# --- configuration ------------------------------------------------------------


def test_mtls_is_on_unless_switched_off(tmp_path: Path) -> None:
    assert MTLS_DEFAULT is True
    missing = Env({"MESH_CERTS_DIR": str(tmp_path), "MESH_SERVICE_IDENTITY": "catalog"})
    with pytest.raises(ConfigError, match=r"MESH_MTLS is on but .*ca\.pem is missing"):
        MeshSecurity.from_env(missing)
    security = MeshSecurity.from_env(Env({"MESH_MTLS": "off"}))
    assert not security.enabled
    assert security.policy is None
    off = ServerConfig.from_env(Env({"MESH_MTLS": "off"}), "127.0.0.1:0")
    assert not off.security.enabled


def test_on_reads_the_identity_certificates_and_policy(certs: Certs) -> None:
    env = {"MESH_MTLS": "on", "MESH_CERTS_DIR": str(certs.directory)}
    security = MeshSecurity.from_env(Env({**env, "MESH_SERVICE_IDENTITY": "orders"}))
    assert security.enabled
    assert security.service == "orders"
    assert security.identity == spiffe_id("orders")
    assert security.policy is not None
    assert security.certs_dir == certs.directory
    spiffe = Env({**env, "MESH_SERVICE_IDENTITY": "spiffe://shop.local/catalog"})
    assert MeshSecurity.from_env(spiffe).service == "catalog"
    # compose names each service in OTEL_SERVICE_NAME already.
    assert MeshSecurity.from_env(Env({**env, "OTEL_SERVICE_NAME": "payments"})).service == (
        "payments"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "MESH_SERVICE_IDENTITY"),
        ({"OTEL_SERVICE_NAME": "orders-canary"}, "orders-canary"),
        ({"MESH_SERVICE_IDENTITY": "billing"}, "MESH_SERVICE_IDENTITY must be one of"),
        ({"MESH_SERVICE_IDENTITY": "spiffe://evil.local/orders"}, "evil.local"),
        ({"MESH_SERVICE_IDENTITY": "orders", "MESH_MTLS": "maybe"}, "MESH_MTLS"),
        ({"MESH_SERVICE_IDENTITY": "orders", "MESH_CERTS_DIR": "/nonexistent"}, "make certs"),
    ],
)
def test_a_bad_setting_fails_start_naming_it(
    certs: Certs, extra: dict[str, str], message: str
) -> None:
    env = {"MESH_MTLS": "on", "MESH_CERTS_DIR": str(certs.directory), **extra}
    with pytest.raises(ConfigError, match=message):
        MeshSecurity.from_env(Env(env))


@pytest.mark.parametrize(
    ("target", "service", "expected"),
    [
        ("catalog:50051", None, "catalog"),
        ("dns:///inventory:50053", None, "inventory"),
        ("dns://8.8.8.8/payments:50054", None, "payments"),
        ("127.0.0.1:50051", None, None),
        ("localhost:50051", None, None),
        ("127.0.0.1:50051", "catalog", "catalog"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "orders", "orders"),
    ],
)
def test_the_expected_server_comes_from_the_caller_or_the_host(
    target: str, service: str | None, expected: str | None
) -> None:
    assert expected_service(target, service) == expected


# --- the client's check of the server -------------------------------------------


async def _health(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_client_refuses_a_server_that_is_not_the_service_it_meant(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    key, cert = certs.pair("gateway")
    async with mtls_catalog.dial(key, cert, certs.ca(), server_name="catalog") as channel:
        assert await _health(channel) == grpc.StatusCode.OK
    async with mtls_catalog.dial(key, cert, certs.ca(), server_name="orders") as channel:
        assert await _health(channel) == grpc.StatusCode.UNAVAILABLE


async def test_channels_call_with_mtls_and_check_the_server(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    channels = Channels(security=certs.security("gateway"))
    try:
        good = channels.get(f"127.0.0.1:{mtls_catalog.port}", "catalog")
        stub: Any = catalog_pb2_grpc.CatalogServiceStub(good)
        await stub.ListProducts(catalog_pb2.ListProductsRequest(page_size=1), timeout=TIMEOUT)
        wrong = channels.get(f"localhost:{mtls_catalog.port}", "orders")
        assert await _health(wrong) == grpc.StatusCode.UNAVAILABLE
    finally:
        await channels.close()


async def test_channels_stay_plaintext_with_mtls_off(certs: Certs) -> None:
    config = ServerConfig("127.0.0.1:0", grace_s=0.0, drain_s=0.0, faults=FaultConfig())
    mesh = build_server(config, ["test.mesh.v1.Probe"])
    channels = Channels(security=MeshSecurity())
    try:
        await start(mesh)
        assert mesh.certificates is None
        assert await _health(channels.get(f"127.0.0.1:{mesh.port}")) == grpc.StatusCode.OK
    finally:
        await channels.close()
        await mesh.server.stop(None)


async def test_a_public_listener_stays_plaintext_with_mtls_on(certs: Certs) -> None:
    config = ServerConfig(
        "127.0.0.1:0",
        grace_s=0.0,
        drain_s=0.0,
        faults=FaultConfig(),
        security=certs.security("gateway"),
    )
    mesh = build_server(config, ["test.mesh.v1.Probe"], public=True)
    try:
        await start(mesh)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
            assert await _health(channel) == grpc.StatusCode.OK
    finally:
        await mesh.server.stop(None)


# --- peer identity and the customer header ---------------------------------------


class _Context:
    """The two things `peer_identity` and `trusted_subject` read from a servicer context."""

    def __init__(self, metadata: Any, pem: bytes | None) -> None:
        self._metadata = metadata
        self._auth = {"x509_pem_cert": [pem]} if pem else {}

    def invocation_metadata(self) -> Any:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_peer_identity_reads_the_presented_certificate(certs: Certs) -> None:
    assert peer_identity(_Context((), certs.pair("orders")[1])) == spiffe_id("orders")
    assert peer_identity(_Context((), None)) is None
    assert peer_identity(_Context((), b"not a certificate")) is None


def test_the_customer_header_counts_only_from_the_gateway(certs: Certs) -> None:
    header = ((SUBJECT_HEADER, "cus-1"),)
    assert trusted_subject(_Context(header, certs.pair("gateway")[1])) == "cus-1"
    # From another service: dropped, and not as None (an internal call, any customer).
    assert trusted_subject(_Context(header, certs.pair("orders")[1])) == ""
    assert trusted_subject(_Context((), certs.pair("orders")[1])) is None
    # Plaintext (mTLS off): as before.
    assert trusted_subject(_Context(header, None)) == "cus-1"


# --- rotation -------------------------------------------------------------------


def _serial_seen_by_a_new_connection(port: int, certs: Certs) -> int:
    """The serial of the certificate the server presents to a fresh TLS handshake."""
    context = ssl.create_default_context(cafile=str(cert_path(certs.directory, "ca")))
    context.load_cert_chain(
        cert_path(certs.directory, "gateway"), key_path(certs.directory, "gateway")
    )
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="catalog") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


CALLS = 500
FRESH_EVERY = 25  # calls; a new connection then, so handshakes happen mid-rotation


async def test_rotation_under_load_fails_no_call_and_new_connections_see_the_new_certificate(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    port = mtls_catalog.port
    old = load(certs.directory, "catalog").cert.serial_number
    assert await asyncio.to_thread(_serial_seen_by_a_new_connection, port, certs) == old
    key, cert = certs.pair("gateway")
    failures: list[str] = []
    done = asyncio.Event()

    async def call(channel: grpc.aio.Channel) -> None:
        stub: Any = catalog_pb2_grpc.CatalogServiceStub(channel)
        try:
            await stub.ListProducts(catalog_pb2.ListProductsRequest(page_size=1), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as error:
            failures.append(f"{error.code().name}: {error.details()}")

    async def load_loop() -> None:
        async with mtls_catalog.dial(key, cert, certs.ca()) as steady:
            for number in range(CALLS):
                await call(steady)
                if number % FRESH_EVERY == 0:
                    async with mtls_catalog.dial(key, cert, certs.ca()) as fresh:
                        await call(fresh)
        done.set()

    async def rotate_loop() -> int:
        rotations = 0
        while not done.is_set():
            await asyncio.to_thread(ensure, certs.directory, rotate=True)
            rotations += 1
            await asyncio.sleep(0.01)
        return rotations

    _, rotations = await asyncio.gather(load_loop(), rotate_loop())
    assert failures == []
    assert rotations >= 2
    new = load(certs.directory, "catalog").cert.serial_number
    assert new != old
    assert await asyncio.to_thread(_serial_seen_by_a_new_connection, port, certs) == new
    reloader = mtls_catalog.server.mesh.certificates
    assert reloader is not None
    assert reloader.loads >= 2


async def test_a_half_replaced_pair_keeps_the_current_certificate(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    port = mtls_catalog.port
    old = load(certs.directory, "catalog").cert.serial_number
    # A key from another pair under the current certificate: what a reader
    # sees between `make certs` replacing the key and the certificate.
    fresh = issue(load(certs.directory, "ca"), "catalog")
    key_path(certs.directory, "catalog").write_bytes(fresh.key_pem())
    assert await asyncio.to_thread(_serial_seen_by_a_new_connection, port, certs) == old
    key, cert = certs.pair("gateway")
    async with mtls_catalog.dial(key, cert, certs.ca()) as channel:
        assert await _health(channel) == grpc.StatusCode.OK
    # The certificate arrives: the next handshake picks up the whole new pair.
    cert_path(certs.directory, "catalog").write_bytes(fresh.cert_pem())
    new = fresh.cert.serial_number
    assert await asyncio.to_thread(_serial_seen_by_a_new_connection, port, certs) == new


# --- the gateway: public plaintext in front, mTLS behind -----------------------------


@pytest.mark.parametrize(
    ("identity", "code"),
    [("gateway", grpc.StatusCode.OK), ("payments", grpc.StatusCode.PERMISSION_DENIED)],
)
async def test_the_gateway_listens_in_plaintext_and_calls_upstream_with_mtls(
    mtls_catalog: MtlsCatalog,
    certs: Certs,
    monkeypatch: pytest.MonkeyPatch,
    identity: str,
    code: grpc.StatusCode,
) -> None:
    """Its upstream channels read the switch from the environment, as the
    process would; the catalog sees the gateway's identity, or a denied one."""
    from gateway.config import GatewayConfig
    from gateway.server import create_server

    monkeypatch.setenv("MESH_MTLS", "on")
    monkeypatch.setenv("MESH_CERTS_DIR", str(certs.directory))
    monkeypatch.setenv("MESH_SERVICE_IDENTITY", identity)
    env = Env(
        {
            "MESH_MTLS": "on",
            "MESH_CERTS_DIR": str(certs.directory),
            "MESH_SERVICE_IDENTITY": identity,
            "GRPC_LISTEN_ADDR": "127.0.0.1:0",
            "GATEWAY_UPSTREAM_CATALOG": f"127.0.0.1:{mtls_catalog.port}",
            "GATEWAY_ACCESS_LOG": "false",
        }
    )
    gateway = await create_server(GatewayConfig.from_env(env))
    try:
        await start(gateway.mesh)
        assert gateway.mesh.certificates is None  # the public listener
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.mesh.port}") as channel:
            stub: Any = catalog_pb2_grpc.CatalogServiceStub(channel)
            request = catalog_pb2.ListProductsRequest(page_size=1)
            try:
                await stub.ListProducts(request, timeout=TIMEOUT)
                got = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                got = error.code()
        assert got == code
    finally:
        await gateway.mesh.server.stop(None)
        await gateway.channels.close()


async def test_the_probe_speaks_mtls_as_the_service_itself(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    target = f"127.0.0.1:{mtls_catalog.port}"
    mtls = {"MESH_MTLS": "on", "MESH_CERTS_DIR": str(certs.directory)}
    as_catalog = Env({**mtls, "MESH_SERVICE_IDENTITY": "catalog"})
    as_orders = Env({**mtls, "MESH_SERVICE_IDENTITY": "orders"})  # expects orders there

    def probe(*argv: str, env: Env) -> int:
        return probe_main(["probe", *argv], env)

    assert await asyncio.to_thread(probe, target, env=as_catalog) == 0
    assert await asyncio.to_thread(probe, target, env=as_orders) == 1
    assert await asyncio.to_thread(probe, target, env=Env({"MESH_MTLS": "off"})) == 1
    assert await asyncio.to_thread(probe, "--plaintext", target, env=as_catalog) == 1
    assert await asyncio.to_thread(probe, target, env=Env({"MESH_MTLS": "on"})) == 2


async def test_a_mismatched_pair_fails_start_naming_it(certs: Certs) -> None:
    fresh = issue(load(certs.directory, "ca"), "orders")
    key_path(certs.directory, "orders").write_bytes(fresh.key_pem())
    with pytest.raises(ConfigError, match="does not belong to"):
        build_server(
            ServerConfig("127.0.0.1:0", 0.0, 0.0, FaultConfig(), security=certs.security("orders")),
            [],
        )
    with pytest.raises(ConfigError, match="does not belong to"):
        Channels(security=certs.security("orders"))


async def test_given_a_certificate_the_gateway_s_public_listener_serves_tls(
    mtls_catalog: MtlsCatalog, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No client certificate asked; a plaintext client is refused. (The demo CA's
    gateway certificate stands in for a public one.)"""
    from gateway.config import GatewayConfig
    from gateway.server import create_server

    mesh = {
        "MESH_MTLS": "on",
        "MESH_CERTS_DIR": str(certs.directory),
        "MESH_SERVICE_IDENTITY": "gateway",
    }
    for name, value in mesh.items():
        monkeypatch.setenv(name, value)
    env = Env(
        {
            **mesh,
            "GRPC_LISTEN_ADDR": "127.0.0.1:0",
            "GATEWAY_UPSTREAM_CATALOG": f"127.0.0.1:{mtls_catalog.port}",
            "GATEWAY_ACCESS_LOG": "false",
            "GATEWAY_TLS_CERT_FILE": str(cert_path(certs.directory, "gateway")),
            "GATEWAY_TLS_KEY_FILE": str(key_path(certs.directory, "gateway")),
        }
    )
    gateway = await create_server(GatewayConfig.from_env(env))
    target = f"127.0.0.1:{gateway.mesh.port}"
    request = catalog_pb2.ListProductsRequest(page_size=1)
    server_only = grpc.ssl_channel_credentials(root_certificates=certs.ca())
    try:
        await start(gateway.mesh)
        override = [("grpc.ssl_target_name_override", "gateway")]
        async with grpc.aio.secure_channel(target, server_only, options=override) as channel:
            stub: Any = catalog_pb2_grpc.CatalogServiceStub(channel)
            assert (await stub.ListProducts(request, timeout=TIMEOUT)).products
        async with grpc.aio.insecure_channel(target) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListProducts(request, timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gateway.mesh.server.stop(None)
        await gateway.channels.close()


async def test_channels_present_the_client_certificate_now_in_the_files(
    mtls_catalog: MtlsCatalog, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a rotation under a new CA, which the server takes up at once, a
    channel made with the old client certificate is refused (the control);
    Channels, once it has looked at the files again, makes channels that are not."""
    import mesh.channels

    port = mtls_catalog.port
    request = catalog_pb2.GetProductRequest(id="prod-chemex")  # what orders may call

    async def outcome(channel: grpc.aio.Channel) -> grpc.StatusCode:
        stub: Any = catalog_pb2_grpc.CatalogServiceStub(channel)
        try:
            await stub.GetProduct(request, timeout=TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    monkeypatch.setattr(mesh.channels, "RENEW_CHECK_S", 3600.0)
    channels = Channels(security=certs.security("orders"))
    try:
        first = channels.get(f"127.0.0.1:{port}", "catalog")
        assert await outcome(first) == grpc.StatusCode.OK
        for name in ("ca.pem", "ca.key"):
            (certs.directory / name).unlink()
        ensure(certs.directory)  # a new CA, and every certificate issued again under it

        stale = channels.get(f"localhost:{port}", "catalog")  # not looked yet: old certificate
        assert await outcome(stale) == grpc.StatusCode.UNAVAILABLE

        monkeypatch.setattr(mesh.channels, "RENEW_CHECK_S", 0.0)
        renewed = channels.get(f"localhost:{port}", "catalog")
        assert renewed is not stale
        assert channels.get(f"127.0.0.1:{port}", "catalog") is not first
        assert await outcome(renewed) == grpc.StatusCode.OK
    finally:
        await channels.close()


async def test_a_half_rotated_client_pair_keeps_the_current_channels(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mesh.channels

    monkeypatch.setattr(mesh.channels, "RENEW_CHECK_S", 0.0)
    channels = Channels(security=certs.security("orders"))
    try:
        first = channels.get("127.0.0.1:1", "catalog")
        fresh = issue(load(certs.directory, "ca"), "orders")
        key_path(certs.directory, "orders").write_bytes(fresh.key_pem())  # not its certificate
        assert channels.get("127.0.0.1:1", "catalog") is first
    finally:
        await channels.close()
