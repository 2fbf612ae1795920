"""What the mesh's security costs a call: catalog GetProduct with mTLS and the policy on vs off.

Two catalogs run at once on free loopback ports, tracing off in both: one
with MESH_MTLS=on (a TLS 1.3 server that requires the caller's certificate,
and the authorization interceptor checking mesh/policy.yaml on every call),
one with MESH_MTLS=off. The client calls the first as the gateway, with the
gateway's certificate, and the second in plaintext. Each round opens one
connection and makes its first call outside the clock, so the figures are the
cost per call on a warm connection (encryption and the policy check), not
the handshake's; rounds alternate between the two.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.load import Endpoint, Sample, get_product, interleave
from bench.report import against_base, header
from localmode.processes import Stack, free_port, start_all
from localmode.topology import Topology
from mesh.tls import MeshSecurity, channel_credentials, channel_options

__all__ = ["measure_mtls", "render_mtls", "start_catalogs"]

ON = "mTLS and policy on"
OFF = "mTLS off"
CALLER = "gateway"
MODES = {ON: {"MESH_MTLS": "on"}, OFF: {"MESH_MTLS": "off"}}


def start_catalogs(run_dir: Path) -> tuple[Stack, dict[str, Endpoint]]:
    """Both catalogs, started; mode -> how the client reaches it."""
    topology = Topology.load()
    services = []
    for mode, env in MODES.items():
        ports = {key: free_port() for key in topology.default_ports()}
        own_dir = run_dir / env["MESH_MTLS"]
        service = topology.resolve("catalog", ports, own_dir)
        extra = {**env, "OTEL_SDK_DISABLED": "true"}
        named = replace(service, name=f"catalog-mtls-{env['MESH_MTLS']}")
        services.append((mode, replace(named, environment={**service.environment, **extra})))
    stack = Stack(run_dir)
    start_all(stack, [service for _, service in services])
    endpoints = {}
    for mode, service in services:
        address = str(service.grpc_target)
        if mode == OFF:
            endpoints[mode] = Endpoint(address)
            continue
        certs = Path(service.environment["MESH_CERTS_DIR"])  # made by local mode at start
        caller = MeshSecurity(enabled=True, certs_dir=certs, service=CALLER)
        endpoints[mode] = Endpoint(
            address,
            channel_credentials(caller),
            tuple(channel_options(address, "catalog")),
        )
    return stack, endpoints


async def measure_mtls(
    endpoints: dict[str, Endpoint], calls: int, rounds: int, concurrency: int
) -> dict[str, Sample]:
    prepared = {mode: (get_product, endpoint) for mode, endpoint in endpoints.items()}
    return await interleave(prepared, calls, rounds, concurrency)


def render_mtls(results: dict[int, dict[str, Sample]], command: str) -> str:
    lines = [
        *header("catalog GetProduct with the mesh's mTLS and policy on vs off", command),
        "Setup: one Python grpc.aio client process; two catalog processes (Python,"
        " OTEL_SDK_DISABLED=true) on loopback, one with MESH_MTLS=on (TLS 1.3, client"
        " certificate required, authorization interceptor on every call) called with the"
        " gateway's certificate, one with MESH_MTLS=off called in plaintext. One connection per"
        " round, its first call outside the clock: the cost per call on a warm connection, not"
        " the handshake. Rounds alternate. 'added' is the on median minus the off median at the"
        " same concurrency; 'x off' is their ratio.",
        "",
        *against_base(results, OFF, "mode", "x off"),
    ]
    return "\n".join(lines) + "\n"
