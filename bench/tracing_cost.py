"""The `tracing` part: what tracing costs catalog, split into making spans and exporting them.

catalog (Python, mesh features off but tracing) runs four times at once on
free ports, one process per row: with OTEL_SDK_DISABLED=true; as deployed
but taking only calls whose traceparent says not sampled; with
OTEL_TRACES_EXPORTER=none (every span made and sampled as usual, none
exported); and as deployed, every span batch-exported over OTLP to a real
Jaeger. Calls carry no trace context but in the unsampled row, so each
starts a sampled trace: one SERVER span per call.

Besides throughput, each row gives its process's CPU time per call (user
plus system, from /proc, over every call it served, warm-up included): it
counts the batch processor's thread as well, and on a shared 2-core machine
it moves far less from run to run than calls per second do.

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
from bench.load import WARM_UP_CALLS, Call, Prepare, Sample, get_product, interleave
from bench.report import against_base, header
from localmode.processes import Stack, cpu_seconds, free_port, start_all
from localmode.topology import Topology

__all__ = [
    "EXPORTED",
    "NOT_EXPORTED",
    "NOT_EXPORTED_NAME",
    "OFF",
    "ROWS",
    "UNSAMPLED",
    "TracingRun",
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
    pids: dict[str, int]  # row -> the PID of its own catalog


@dataclass
class TracingRun:
    samples: dict[str, Sample]  # row -> its calls
    cpu_us: dict[str, float]  # row -> its catalog's CPU time per call served


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
    unsampled = copy_of(exported, "unsampled", {})
    catalogs = {OFF: off, UNSAMPLED: unsampled, NOT_EXPORTED: not_exported, EXPORTED: exported}
    for service in catalogs.values():
        (service.run_dir / "data").mkdir(parents=True, exist_ok=True)
    stack = Stack(run_dir)
    start_all(stack, [jaeger, *catalogs.values()])
    pids = {}
    for row, service in catalogs.items():
        pid = stack.pid(service.name)
        assert pid is not None, f"{service.name} is not running"
        pids[row] = pid
    return stack, TracingTargets(
        {
            row: (_unsampled if row == UNSAMPLED else get_product, str(service.grpc_target))
            for row, service in catalogs.items()
        },
        f"http://127.0.0.1:{jaeger.ports[16686]}",
        pids,
    )


async def measure_tracing(
    started: TracingTargets, calls: int, rounds: int, concurrency: int
) -> TracingRun:
    before = {row: cpu_seconds(pid) for row, pid in started.pids.items()}
    samples = await interleave(started.targets, calls, rounds, concurrency)
    spent = {row: cpu_seconds(pid) - before[row] for row, pid in started.pids.items()}
    # What each process served: interleave's warm-up round, then one call
    # per round to connect and the timed ones.
    served = {
        row: min(calls, WARM_UP_CALLS) + 1 + rounds + len(samples[row].latencies_s)
        for row in samples
    }
    return TracingRun(samples, {row: spent[row] / served[row] * 1e6 for row in samples})


def render_tracing(results: dict[int, TracingRun], command: str) -> str:
    lines = [
        *header("what tracing costs catalog: making spans, and exporting them", command),
        "Setup: one Python grpc.aio client process; catalog (Python; mTLS, metrics, faults and"
        " the concurrency limit off) runs four times on loopback, one process per row:"
        f" '{OFF}' with OTEL_SDK_DISABLED=true; '{UNSAMPLED}' as deployed, taking only calls"
        " whose traceparent says not sampled (no span); "
        f"'{NOT_EXPORTED}' with OTEL_TRACES_EXPORTER=none, every span made and sampled but"
        f" none exported; '{EXPORTED}' as deployed, spans batch-exported over OTLP gRPC to a"
        " real Jaeger. The other calls carry no trace context, so each starts a sampled"
        " trace: one SERVER span per call. Rounds go over every row in turn. 'added µs' is"
        f" the median minus '{OFF}''s, 'x off' their ratio.",
        "",
        *against_base({c: run.samples for c, run in results.items()}, OFF, "tracing", "x off"),
    ]
    run = results.get(JUDGED_IN_FLIGHT)
    if run is None:
        lines += ["", f"Not judged: no run at {JUDGED_IN_FLIGHT} in flight."]
        return "\n".join(lines) + "\n"
    off, cpu_off = run.samples[OFF].calls_per_second, run.cpu_us[OFF]
    lost = {row: 1 - sample.calls_per_second / off for row, sample in run.samples.items()}
    lines += [
        "",
        f"At {JUDGED_IN_FLIGHT} in flight: the throughput lost against '{OFF}', which the"
        " targets are on, and the CPU time each catalog spent per call it served (all its"
        " threads, from /proc; far steadier from run to run than calls per second).",
        "",
        "| tracing | calls/s | lost | target | | CPU µs per call | CPU added |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row, sample in run.samples.items():
        target = TARGETS.get(row)
        verdict = "" if target is None else ("met" if lost[row] <= target else "not met")
        ceiling = "" if target is None else f"≤ {target:.0%}"
        share = "" if row == OFF else f"{lost[row]:.0%}"
        cpu = run.cpu_us[row]
        added = "" if row == OFF else f"{cpu / cpu_off - 1:+.0%}"
        lines.append(
            f"| {row} | {sample.calls_per_second:,.0f} | {share} | {ceiling} | {verdict} "
            f"| {cpu:,.0f} | {added} |"
        )
    split = _split(cpu_off, run.cpu_us[NOT_EXPORTED], run.cpu_us[EXPORTED])
    return "\n".join([*lines, "", split]) + "\n"


def _split(off: float, made: float, exported: float) -> str:
    """One sentence: how a sampled call's CPU divides between making and exporting its span."""
    making, exporting = made - off, exported - made
    if making < 0 or exporting < 0:
        return (
            f"CPU per call: {off:,.0f} µs with tracing off, {made:,.0f} µs making spans,"
            f" {exported:,.0f} µs making and exporting them: this run's noise is larger than"
            " the differences, so they do not split the cost."
        )
    return (
        f"Of the {exported - off:,.0f} µs of CPU a sampled call adds ({exported / off - 1:.0%}"
        f" of the {off:,.0f} µs a call takes with tracing off), making its span (the SDK's"
        f" start, attributes and end) takes {making:,.0f} µs and exporting it (the batch"
        f" processor's thread encoding OTLP and sending it) {exporting:,.0f} µs."
    )
