"""What the in-process mesh costs a hop, part by part; how fast an open breaker fails a call.

Per hop: catalog GetProduct, from one client process to a catalog process
of its own per configuration, in the same run:
- bare: a plain grpc.aio channel to a catalog with every mesh feature off
  (MESH_MTLS=off, OTEL_SDK_DISABLED=true, no metrics, no fault file, no
  concurrency limit): grpc.aio and the servicer, nothing else;
- one feature group on both sides, the rest off: mTLS and the authorization
  policy; tracing, every span sampled and exported to a real Jaeger; the
  resilience and metrics group (client: `mesh.channels.Channels` with the
  traffic policy, i.e. deadline propagation, retry service config and
  throttling, the circuit breaker, client metrics; server: a fault file
  looked at every second, the concurrency limit; not its RED metrics, which
  OTEL_SDK_DISABLED=true turns off with tracing, so only the whole mesh has
  them);
- whole mesh: the client as the gateway calls it, the catalog as deployed,
  every group above at once.
Rounds alternate, one connection each, its first call outside the clock.
In the same rounds run the anchors the low-latency issue's target names: the
bare grpc.aio echo and the echo behind two nginx sidecars (`bench.anchors`);
its verdict is read on them at 1 in flight.

Breaker: with catalog's breaker open (its upstream a dead port), how long a
refused call takes, next to a bare GetProduct at 1 in flight and to a call
failing on its own against the dead port without a breaker.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider

from bench.anchors import BARE as ECHO
from bench.anchors import BARE_ENV, SIDECARS, AnchorStack, start_echo_anchors
from bench.load import Call, Endpoint, Prepare, Sample, Target, get_product, interleave
from bench.nginx import NGINX
from bench.report import against_base, header, percentile
from localmode.processes import free_port, start_all
from localmode.topology import LocalService, Topology
from mesh import metrics
from mesh.breaker import BreakerState
from mesh.channels import Channels
from mesh.tls import MeshSecurity, channel_credentials, channel_options
from mesh.traffic_file import DEFAULT_TRAFFIC_FILE, load_traffic
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tracing.interceptors import client_interceptors
from tracing.provider import build_tracer_provider

__all__ = ["Hops", "measure_breaker", "measure_hops", "render_mesh", "start_hops"]

BARE = "bare grpc.aio"
MESH = "whole mesh"
# One feature group at a time, each on both sides of the hop, so that the
# whole mesh's cost can be read as the sum of its parts.
MTLS_ONLY = "mTLS and policy only"
TRACING_ONLY = "tracing only (sampled)"
RESILIENCE_ONLY = "resilience and metrics only"
MESH_UNSAMPLED = "whole mesh, trace not sampled"
HOPS = (BARE, MTLS_ONLY, TRACING_ONLY, RESILIENCE_ONLY, MESH)
QUIET = (BARE, MTLS_ONLY, RESILIENCE_ONLY, MESH_UNSAMPLED)  # no span recorded
SAMPLED = (BARE, TRACING_ONLY, MESH)  # every call sampled and exported
# The low-latency issue's target for the whole mesh per hop, at 1 in flight:
# at most this much over the bare echo's median and p99, and less than the
# nginx sidecar pair adds to the echo in the same run.
TARGET_MEDIAN_US, TARGET_P99_US = 150, 300
Hopped = dict[int, dict[str, Sample]]  # concurrency -> row -> its calls
# The caller's trace said "not sampled" (W3C flags 00): what the mesh costs
# a hop when tracing records nothing, as with a ratio sampler at the edge.
UNSAMPLED_CONTEXT = propagate.extract({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"})
# Which of BARE_ENV's switches each hop's catalog leaves as deployed.
SERVER_FEATURES = {
    BARE: (),
    MTLS_ONLY: ("MESH_MTLS",),
    TRACING_ONLY: ("OTEL_SDK_DISABLED",),
    RESILIENCE_ONLY: ("MESH_METRICS_ADDRESS", "MESH_FAULTS_FILE", "GRPC_MAX_CONCURRENT_RPCS"),
    MESH: tuple(BARE_ENV),
}
BREAKER_CALLS = 2000
UNGUARDED_CALLS = 200


@dataclass(frozen=True)
class Hops:
    endpoints: dict[str, Endpoint]  # mode -> how the client reaches its catalog
    client_traces: TracerProvider  # to flush before Jaeger stops
    anchors: dict[str, tuple[Prepare, str]]  # the echo, and the nginx pair when it runs
    nginx: str  # nginx's version, or why the pair is not measured


def _catalog(topology: Topology, hop: str, run_dir: Path, otlp: str) -> LocalService:
    """`hop`'s catalog: as deployed (mTLS on, the run's fault file, spans into
    the run's Jaeger), with what `hop` leaves out switched off."""
    ports = {key: free_port() for key in topology.default_ports()}
    own_dir = run_dir / f"catalog-{HOPS.index(hop)}"
    catalog = topology.resolve("catalog", ports, own_dir)
    deployed = {
        **catalog.environment,
        "MESH_MTLS": "on",
        "MESH_FAULTS_FILE": str(run_dir / "faults.yaml"),
        "OTEL_SDK_DISABLED": "false",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
    }
    off = {key: value for key, value in BARE_ENV.items() if key not in SERVER_FEATURES[hop]}
    return replace(catalog, name=own_dir.name, environment={**deployed, **off})


def start_hops(run_dir: Path, nginx: Path = NGINX) -> tuple[AnchorStack, Hops]:
    """Jaeger, a catalog per hop and the echo anchors, started, and the client's
    side of each hop."""
    topology = Topology.load(replicas={"catalog": 1})
    ports = {key: free_port() for key in topology.default_ports()}
    jaeger = topology.resolve("jaeger", ports, run_dir / "jaeger")
    otlp = f"127.0.0.1:{jaeger.ports[4317]}"
    catalogs = {hop: _catalog(topology, hop, run_dir, f"http://{otlp}") for hop in HOPS}
    stack = AnchorStack(run_dir)
    start_all(stack, [jaeger, *catalogs.values()])
    try:
        anchors, missing, version = start_echo_anchors(stack, run_dir, nginx)
    except BaseException:
        stack.stop()
        raise

    # The client's side of each hop; the whole mesh's as the gateway has it.
    provider = build_tracer_provider(
        "bench-client", "bench", exporter=OTLPSpanExporter(endpoint=otlp, insecure=True)
    )
    metrics.serve_metrics("127.0.0.1:0", "gateway")  # client metrics on Channels' channels
    traffic = load_traffic(DEFAULT_TRAFFIC_FILE)
    address = {hop: str(catalog.grpc_target) for hop, catalog in catalogs.items()}

    def caller(hop: str) -> MeshSecurity:
        certs = Path(catalogs[hop].environment["MESH_CERTS_DIR"])  # made by local mode
        return MeshSecurity(enabled=True, certs_dir=certs, service="gateway")

    def traced() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            address[TRACING_ONLY], interceptors=client_interceptors(provider)
        )

    def resilient() -> grpc.aio.Channel:
        channels = Channels(security=MeshSecurity(), traffic=traffic)
        return channels.get(address[RESILIENCE_ONLY], "catalog")

    def whole() -> grpc.aio.Channel:
        channels = Channels(client_interceptors(provider), security=caller(MESH), traffic=traffic)
        return channels.get(address[MESH], "catalog")

    endpoints = {
        BARE: Endpoint(address[BARE]),
        MTLS_ONLY: Endpoint(
            address[MTLS_ONLY],
            channel_credentials(caller(MTLS_ONLY)),
            tuple(channel_options(address[MTLS_ONLY], "catalog")),
        ),
        TRACING_ONLY: Endpoint(address[TRACING_ONLY], factory=traced),
        RESILIENCE_ONLY: Endpoint(address[RESILIENCE_ONLY], factory=resilient),
        MESH: Endpoint(address[MESH], factory=whole),
    }
    why = missing.get(SIDECARS, "")
    return stack, Hops(endpoints, provider, anchors, version or f"not measured: {why}")


async def measure_hops(
    hops: Hops, calls: int, rounds: int, concurrencies: Sequence[int]
) -> tuple[Hopped, Hopped]:
    """The rows that record no span, at every concurrency, then the rows with
    every call sampled, each group with its own bare rows and echo anchors.

    Not all in one interleaving: a sampled round's spans are batch-exported
    (by the client, the catalog and Jaeger's ingest) for seconds after it, and
    loaded whatever rounds ran then. Mixed in, the unsampled whole mesh
    measured +452 µs at 1 in flight; measured before any span, +249 µs.
    """
    prepared: dict[str, tuple[Prepare, Target]]
    prepared = {mode: (get_product, endpoint) for mode, endpoint in hops.endpoints.items()}
    prepared[MESH_UNSAMPLED] = (_unsampled_get_product, hops.endpoints[MESH])
    groups: list[Hopped] = []
    for rows in (QUIET, SAMPLED):
        chosen = {row: prepared[row] for row in rows} | hops.anchors
        groups.append({c: await interleave(chosen, calls, rounds, c) for c in concurrencies})
    return groups[0], groups[1]


async def _unsampled_get_product(channel: grpc.aio.Channel) -> Call:
    """GetProduct made inside an unsampled trace, as a service makes its calls
    while serving an unsampled caller."""
    call = await get_product(channel)

    def unsampled() -> Awaitable[Any]:
        # grpc.aio runs the client interceptors in a task that copies the
        # current context when the call is made: attached for that moment only.
        token = otel_context.attach(UNSAMPLED_CONTEXT)
        try:
            return call()
        finally:
            otel_context.detach(token)

    return unsampled


async def _timed(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call()
        latencies.append(time.perf_counter() - start)
    return latencies


async def measure_breaker(bare: Endpoint) -> dict[str, list[float]]:
    """Latencies of: a bare GetProduct; a call refused by an open breaker; a
    call failing against a dead port on a plain channel (no breaker)."""
    request = catalog_pb2.GetProductRequest(id="prod-chemex")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    channels = Channels(security=MeshSecurity(), traffic=load_traffic(DEFAULT_TRAFFIC_FILE))
    guarded = catalog_pb2_grpc.CatalogServiceStub(channels.get(dead, "catalog"))
    breaker = None
    for _ in range(20):  # until the failures open it
        await _timed(lambda: guarded.GetProduct(request, timeout=5), 1)
        breaker = channels.breaker(dead)
        if breaker is not None and breaker.breaker.state is BreakerState.OPEN:
            break
    assert breaker is not None
    assert breaker.breaker.state is BreakerState.OPEN
    refused = await _timed(lambda: guarded.GetProduct(request, timeout=5), BREAKER_CALLS)
    assert breaker.rejected >= BREAKER_CALLS  # still open: none reached the dead port
    await channels.close()
    async with grpc.aio.insecure_channel(dead) as plain:
        stub = catalog_pb2_grpc.CatalogServiceStub(plain)
        unguarded = await _timed(lambda: stub.GetProduct(request, timeout=5), UNGUARDED_CALLS)
    async with bare.channel() as channel:
        live = catalog_pb2_grpc.CatalogServiceStub(channel)
        await live.GetProduct(request, timeout=5)
        anchor = await _timed(lambda: live.GetProduct(request, timeout=5), BREAKER_CALLS)
    return {
        "bare GetProduct (anchor)": anchor,
        "refused by the open breaker": refused,
        "dead port, plain channel, no breaker": unguarded,
    }


def render_mesh(
    quiet: Hopped, sampled: Hopped, breaker: dict[str, list[float]], command: str, nginx: str
) -> str:
    lines = [
        *header(
            "what the in-process mesh adds to a hop, part by part; an open breaker's refusal",
            command,
        ),
        "Setup: one Python grpc.aio client process; one catalog process (Python) per row,"
        f" on loopback. '{BARE}': a plain channel to a catalog with every mesh feature off"
        " (MESH_MTLS=off, OTEL_SDK_DISABLED=true, no metrics, no fault file,"
        " GRPC_MAX_CONCURRENT_RPCS=0)."
        f" '{MTLS_ONLY}': the gateway's certificate to a catalog with MESH_MTLS=on (TLS 1.3,"
        " client certificate required, the authorization interceptor on every call)."
        f" '{TRACING_ONLY}': client spans and server spans, every call sampled, batch-exported"
        " over OTLP to a real Jaeger."
        f" '{RESILIENCE_ONLY}': the client's mesh.channels.Channels with mesh/traffic.yaml"
        " (deadline propagation, retry service config and throttling, the circuit breaker,"
        " client RED metrics) to a catalog with a fault file looked at every second and the"
        " concurrency limit; its RED metrics stay off, since OTEL_SDK_DISABLED=true, which"
        " keeps its tracing off, turns the metrics SDK off too: only the whole mesh has"
        " server metrics."
        f" '{MESH}': all of them at once, the client as the gateway has it and the catalog as"
        f" deployed. '{MESH_UNSAMPLED}': the same hop, each call made inside a trace whose"
        " traceparent says not sampled, as a service calls while serving such a caller (no"
        " span on either side, the context passed on). One connection per round, its first"
        " call outside the clock; rounds alternate. 'added' is the row's median minus the"
        " bare one of its own table at the same concurrency; 'x bare' their ratio."
        f" Each table's rounds also go to '{ECHO}' (bench.echo_server) and, when nginx runs"
        f" ({nginx}), '{SIDECARS}', as in bench/anchors.md.",
        "",
        "Rows that record no span, measured first (a sampled round's spans are exported for"
        " seconds after it and would load the rounds run meanwhile):",
        "",
        *against_base(quiet, BARE, "hop", "x bare"),
        "",
        "Rows with every call sampled and exported, measured after, with their own bare rounds:",
        "",
        *against_base(sampled, BARE, "hop", "x bare"),
        "",
        *_verdict(quiet.get(1, {}), sampled.get(1, {})),
    ]
    anchor = statistics.median(next(iter(breaker.values())))
    lines += [
        "",
        "How long a call takes to fail once catalog's breaker is open (its upstream a port"
        " nothing listens on), one call at a time, next to a bare GetProduct of the live"
        " catalog and to a call failing on its own against the dead port on a plain channel"
        " (no breaker, no retries). 'x anchor' is the median over the bare GetProduct's.",
        "",
        "| call | calls | median µs | p99 µs | x anchor |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, lat in breaker.items():
        median = statistics.median(lat)
        lines.append(
            f"| {label} | {len(lat)} | {median * 1e6:,.0f} | {percentile(lat, 0.99) * 1e6:,.0f} "
            f"| {median / anchor:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _verdict(quiet: dict[str, Sample], sampled: dict[str, Sample]) -> list[str]:
    """The issue's target for the whole mesh per hop, on the 1-in-flight rows:
    over the bare echo, at most TARGET_MEDIAN_US median and TARGET_P99_US p99,
    and less than the nginx pair adds, each figure against its own table's echo."""
    goal = (
        f"Target: the whole mesh adds at most {TARGET_MEDIAN_US} µs median and"
        f" {TARGET_P99_US} µs p99 per hop over '{ECHO}', and less than the nginx pair adds"
        " (1 in flight)"
    )
    if ECHO not in quiet or ECHO not in sampled:
        return [f"{goal}: not judged, no run with 1 in flight."]
    lines = [
        f"{goal}. 'bare catalog' is the hop with no mesh at all: what catalog's own work"
        " (decoding, the read model, encoding) adds over an echo, before any mesh feature.",
        "",
        "| hop | median over echo µs | p99 over echo µs | median over bare catalog µs"
        " | nginx pair adds µs | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, group, row in (
        ("bare catalog", quiet, BARE),
        (MESH_UNSAMPLED, quiet, MESH_UNSAMPLED),
        (f"{MESH} (sampled)", sampled, MESH),
    ):
        lat, echo = group[row].latencies_s, group[ECHO].latencies_s
        median = (statistics.median(lat) - statistics.median(echo)) * 1e6
        p99 = (percentile(lat, 0.99) - percentile(echo, 0.99)) * 1e6
        bare = (statistics.median(lat) - statistics.median(group[BARE].latencies_s)) * 1e6
        met = median <= TARGET_MEDIAN_US and p99 <= TARGET_P99_US
        pair = ""
        if SIDECARS in group:
            added = statistics.median(group[SIDECARS].latencies_s) - statistics.median(echo)
            pair = f"{added * 1e6:,.0f}"
            met = met and median < added * 1e6
        lines.append(
            f"| {label} | {median:,.0f} | {p99:,.0f} | {bare:,.0f} | {pair} "
            f"| {'met' if met else 'not met'} |"
        )
    return lines
