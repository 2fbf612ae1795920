"""The `tracing` part: what tracing costs catalog, split into making spans and exporting them.

catalog (Python, mesh features off but tracing) runs three times at once on
free ports: with OTEL_SDK_DISABLED=true; with OTEL_TRACES_EXPORTER=none
(every span made and sampled as usual, none exported); and as deployed,
every span batch-exported over OTLP to a real Jaeger. The last also takes
calls whose traceparent says not sampled. Calls carry no trace context
otherwise, so each starts a sampled trace: one SERVER span per call.

The low-latency issue's targets are on the 32-in-flight throughput: a call
whose trace is not sampled costs at most 5% against tracing off, a sampled
one at most 20%. The split says where a sampled call's cost goes, so that
the choice between a leaner span pipeline and sampling fewer traces rests
on figures: the SDK's span lifecycle (start, attributes, end) is the
not-exported row; the batch processor's thread encoding OTLP and sending it
is the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from bench.calls import UNSAMPLED_PARENT, copy_of
from bench.load import Call, Prepare, Sample, get_product, interleave
from bench.report import against_base, header
from localmode.processes import Stack, free_port, start_all
from localmode.topology import Topology

__all__ = [
    "EXPORTED",
    "NOT_EXPORTED",
    "NOT_EXPORTED_NAME",
    "OFF",
    "ROWS",
    "UNSAMPLED",
    "TracingTargets",
    "measure_tracing",
    "render_tracing",
    "start_tracing",
]

OFF = "tracing off"
UNSAMPLED = "parent unsampled"
NOT_EXPORTED = "sampled, spans not exported"
EXPORTED = "sampled, exported to Jaeger"
ROWS = (OFF, UNSAMPLED, NOT_EXPORTED, EXPORTED)
# The ceilings on the throughput lost at 32 in flight.
TARGETS = {UNSAMPLED: 0.05, EXPORTED: 0.20}
JUDGED_IN_FLIGHT = 32
NOT_EXPORTED_NAME = "catalog-not-exported"
# Every catalog copy: the mesh's other features off, so tracing is what differs.
QUIET = {
    "MESH_MTLS": "off",
    "MESH_METRICS_ADDRESS": "",
    "MESH_HEALTH_PROBE_ADDRESS": "",
    "MESH_FAULTS_FILE": "",
    "GRPC_MAX_CONCURRENT_RPCS": "0",
}


@dataclass(frozen=True)
class TracingTargets:
    targets: dict[str, tuple[Prepare, str]]  # row -> its call and gRPC target
    jaeger: str  # the query API's base URL, where only the exported row's spans arrive


async def _unsampled(channel: grpc.aio.Channel) -> Call:
    return await get_product(channel, UNSAMPLED_PARENT)


def start_tracing(run_dir: Path) -> tuple[Stack, TracingTargets]:
    """Jaeger and the three catalogs, started."""
    topology = Topology.load(replicas={"catalog": 1})
    ports = {key: free_port() for key in topology.default_ports()}
    jaeger = topology.resolve("jaeger", ports, run_dir / "jaeger")
    exported = topology.resolve("catalog", ports, run_dir / "catalog")
    exported = replace(exported, environment={**exported.environment, **QUIET})
    off = copy_of(exported, "untraced", {"OTEL_SDK_DISABLED": "true"})
    # A name of its own: were any of its spans exported, Jaeger would show it.
    not_exported = copy_of(
        exported,
        "not-exported",
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_SERVICE_NAME": NOT_EXPORTED_NAME},
    )
    catalogs = {OFF: off, NOT_EXPORTED: not_exported, EXPORTED: exported}
    for service in catalogs.values():
        (service.run_dir / "data").mkdir(parents=True, exist_ok=True)
    stack = Stack(run_dir)
    start_all(stack, [jaeger, *catalogs.values()])
    target = {row: str(service.grpc_target) for row, service in catalogs.items()}
    return stack, TracingTargets(
        {
            OFF: (get_product, target[OFF]),
            UNSAMPLED: (_unsampled, target[EXPORTED]),
            NOT_EXPORTED: (get_product, target[NOT_EXPORTED]),
            EXPORTED: (get_product, target[EXPORTED]),
        },
        f"http://127.0.0.1:{jaeger.ports[16686]}",
    )


async def measure_tracing(
    started: TracingTargets, calls: int, rounds: int, concurrency: int
) -> dict[str, Sample]:
    return await interleave(started.targets, calls, rounds, concurrency)


def _throughput(sample: Sample) -> float:
    return len(sample.latencies_s) / sample.elapsed_s


def render_tracing(results: dict[int, dict[str, Sample]], command: str) -> str:
    lines = [
        *header("what tracing costs catalog: making spans, and exporting them", command),
        "Setup: one Python grpc.aio client process; catalog (Python; mTLS, metrics, faults and"
        " the concurrency limit off) runs three times on loopback:"
        f" '{OFF}' with OTEL_SDK_DISABLED=true; '{NOT_EXPORTED}' with"
        " OTEL_TRACES_EXPORTER=none, every span made and sampled but none exported; and as"
        f" deployed, spans batch-exported over OTLP gRPC to a real Jaeger ('{EXPORTED}'),"
        f" which also takes calls whose traceparent says not sampled ('{UNSAMPLED}': no"
        " span). Other calls carry no trace context, so each starts a sampled trace: one"
        " SERVER span per call. Rounds go over every row in turn. 'added µs' is the median"
        f" minus '{OFF}''s, 'x off' their ratio.",
        "",
        *against_base(results, OFF, "tracing", "x off"),
    ]
    by_row = results.get(JUDGED_IN_FLIGHT)
    if by_row is None:
        return (
            "\n".join([*lines, "", f"Not judged: no run at {JUDGED_IN_FLIGHT} in flight."]) + "\n"
        )
    off = _throughput(by_row[OFF])
    cost = {row: 1 - _throughput(sample) / off for row, sample in by_row.items()}
    lines += [
        "",
        f"Throughput lost against '{OFF}' at {JUDGED_IN_FLIGHT} in flight, and the targets:",
        "",
        "| tracing | calls/s | lost | target | |",
        "|---|---:|---:|---:|---|",
    ]
    for row, sample in by_row.items():
        target = TARGETS.get(row)
        verdict = "" if target is None else ("met" if cost[row] <= target else "not met")
        ceiling = "" if target is None else f"≤ {target:.0%}"
        lost = "" if row == OFF else f"{cost[row]:.0%}"
        lines.append(f"| {row} | {_throughput(sample):,.0f} | {lost} | {ceiling} | {verdict} |")
    return "\n".join([*lines, "", _split(cost[NOT_EXPORTED], cost[EXPORTED])]) + "\n"


def _split(making: float, sampled: float) -> str:
    """One sentence: how a sampled call's cost divides between making and exporting its span."""
    exporting = sampled - making
    if exporting < 0 or making < 0:
        return (
            f"Making spans cost {making:.0%} and making and exporting them {sampled:.0%}:"
            " this run's noise is larger than the difference, so it does not split the cost."
        )
    return (
        f"Of the {sampled:.0%} a sampled call costs, making its span (the SDK's start,"
        f" attributes and end) takes {making:.0%} and exporting it (the batch processor's"
        f" thread encoding OTLP and sending it) {exporting:.0%}."
    )
