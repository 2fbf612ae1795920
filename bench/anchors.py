"""The anchors every figure of `make bench` is a ratio to, measured in the same run.

Four targets take the same calls from one client (`bench.load`, rounds
interleaved, one channel per round, its first call outside the clock):
- a bare grpc.aio echo (`python -m bench.echo_server`): one generic handler
  returning the request's bytes, the floor a Python service can reach;
- a grpc-go echo (bench/echo-go, built into .build/bin/echo-go): the same
  with grpc-go, the language's limit on this machine;
- the bare grpc.aio echo behind a sidecar pair: client -> nginx (the
  client's sidecar) -> nginx (the server's) -> echo, each nginx one process
  with `grpc_pass` to an upstream with keepalive (`bench.nginx`): what a
  proxy-based mesh hop costs, measured rather than quoted;
- catalog GetProduct direct, with every mesh feature off as in
  `bench.mesh`'s bare catalog: the shop's own call.
Every median, p99 and throughput is also given as a ratio to the bare
grpc.aio echo's at the same concurrency. Then ghz (pinned in tools/go, its
own Go client) makes catalog's GetProduct calls in as many rounds of as many
calls on one connection, as a cross-check of the Python client's figures.

The echo servers have no health service, so the processes here are ready
when an Echo call through them answers. Without nginx, the echo-go binary or
ghz, those rows are missing and the results say why.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from bench.echo_server import ECHO_METHOD
from bench.load import Call, Prepare, Sample, get_product, interleave
from bench.nginx import NGINX, NginxUnavailable, start_nginx
from bench.report import header, percentile
from localmode.processes import Stack, free_port
from localmode.topology import REPO_ROOT, LocalService, Topology

__all__ = [
    "ECHO_GO",
    "GHZ",
    "AnchorRun",
    "AnchorStack",
    "Anchors",
    "echo",
    "measure_anchors",
    "render_anchors",
    "run_ghz",
    "start_anchors",
    "start_echo_anchors",
]

ECHO_GO = REPO_ROOT / ".build" / "bin" / "echo-go"
GHZ = REPO_ROOT / ".tools" / "bin" / "ghz"
# A catalog with every mesh feature off: the anchors' and bench.mesh's bare hop.
BARE_ENV = {
    "MESH_MTLS": "off",
    "OTEL_SDK_DISABLED": "true",
    "MESH_METRICS_ADDRESS": "",
    "MESH_FAULTS_FILE": "",
    "GRPC_MAX_CONCURRENT_RPCS": "0",
}
BARE = "grpc.aio echo (bare)"
GO = "grpc-go echo"
SIDECARS = "grpc.aio echo behind 2 nginx sidecars"
CATALOG = "catalog GetProduct direct"
# About the size of catalog's GetProduct reply (113 bytes), both ways.
PAYLOAD = b"\x2a" * 100
GHZ_CALL = "shop.catalog.v1.CatalogService/GetProduct"
GHZ_PROTO = "shop/catalog/v1/catalog.proto"  # under protos/, which holds its imports


async def echo(channel: grpc.aio.Channel) -> Call:
    """An Echo of PAYLOAD: bytes out, the same bytes back, no proto either side."""
    call = channel.unary_unary(ECHO_METHOD, None, None)
    return lambda: call(PAYLOAD, timeout=5)


def echo_answers(target: str) -> bool:
    """Whether an Echo call to `target` comes back with what it sent."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(ECHO_METHOD, None, None)
        try:
            return bool(call(PAYLOAD, timeout=1.0) == PAYLOAD)
        except grpc.RpcError:
            return False


class AnchorStack(Stack):
    """A Stack that also runs processes whose readiness is an Echo call through them.

    Stack.start asks the gRPC health service, which the echo servers do not
    have (they serve one method, nothing else).
    """

    def start_echo(self, service: LocalService, timeout_s: float = 20.0) -> None:
        """Starts `service` and returns once Echo answers on its gRPC target."""
        target = service.grpc_target
        assert target is not None, f"{service.name} has no gRPC target"
        self.start(service, timeout_s, ready=lambda: echo_answers(target))


@dataclass(frozen=True)
class Anchors:
    targets: dict[str, tuple[Prepare, str]]  # label -> its call and gRPC target, BARE first
    missing: dict[str, str] = field(default_factory=dict)  # label -> why it is not measured
    nginx: str = ""  # its version, when measured


def _process(name: str, command: tuple[str, ...], run_dir: Path) -> LocalService:
    listen = f"127.0.0.1:{free_port()}"
    return LocalService(
        name=name,
        command=(*command, "--listen", listen),
        environment={},
        ready=f"grpc://{listen}",
        ports={},
        run_dir=run_dir,
    )


def start_echo_anchors(
    stack: AnchorStack, run_dir: Path, nginx: Path = NGINX
) -> tuple[dict[str, tuple[Prepare, str]], dict[str, str], str]:
    """Starts the bare echo and, when nginx can run, the sidecar pair in front of
    it: their targets, why the pair is missing (if it is), and nginx's version."""
    bare = _process("echo", (sys.executable, "-m", "bench.echo_server"), run_dir)
    stack.start_echo(bare)
    targets: dict[str, tuple[Prepare, str]] = {BARE: (echo, str(bare.grpc_target))}
    try:
        server_side, version = start_nginx(
            nginx, str(bare.grpc_target), run_dir, stack.start_echo, "nginx-server"
        )
        client_side, _ = start_nginx(
            nginx, str(server_side.grpc_target), run_dir, stack.start_echo, "nginx-client"
        )
    except NginxUnavailable as why:
        return targets, {SIDECARS: str(why)}, ""
    targets[SIDECARS] = (echo, str(client_side.grpc_target))
    return targets, {}, version


def start_anchors(
    run_dir: Path, nginx: Path = NGINX, echo_go: Path = ECHO_GO
) -> tuple[AnchorStack, Anchors]:
    """Starts the four targets (those it can); stops all if one that must start fails."""
    topology = Topology.load(replicas={"catalog": 1})
    ports = {key: free_port() for key in topology.default_ports()}
    catalog = topology.resolve("catalog", ports, run_dir / "catalog")
    catalog = replace(catalog, environment={**catalog.environment, **BARE_ENV})
    stack = AnchorStack(run_dir)
    try:
        echoes, missing, version = start_echo_anchors(stack, run_dir, nginx)
        targets = {BARE: echoes[BARE]}
        if echo_go.is_file():
            go = _process("echo-go", (str(echo_go),), run_dir)
            stack.start_echo(go)
            targets[GO] = (echo, str(go.grpc_target))
        else:
            missing[GO] = f"{echo_go} is missing (`make bench` builds it from bench/echo-go)"
        if SIDECARS in echoes:
            targets[SIDECARS] = echoes[SIDECARS]
        stack.start(catalog)
        targets[CATALOG] = (get_product, str(catalog.grpc_target))
    except BaseException:
        stack.stop()
        raise
    return stack, Anchors(targets, missing, version)


@dataclass
class AnchorRun:
    """One concurrency's figures: the Python client's per target, and ghz's on catalog."""

    samples: dict[str, Sample]
    ghz: Sample | str  # or why ghz did not run


class GhzFailed(Exception):
    """ghz is missing, exited with an error, or some of its calls failed."""


async def run_ghz(binary: Path, target: str, calls: int, concurrency: int) -> Sample:
    """`calls` catalog GetProduct calls from ghz on one connection, `concurrency` in flight."""
    protos = REPO_ROOT / "protos"
    command = (
        *(str(binary), "--insecure", "--proto", str(protos / GHZ_PROTO)),
        *("--import-paths", str(protos), "--call", GHZ_CALL, "--data", '{"id": "prod-chemex"}'),
        *("--total", str(calls), "--concurrency", str(concurrency), "--connections", "1"),
        *("--timeout", "5s", "--format", "json", target),
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise GhzFailed(f"{binary} is missing (`make tools` installs it)") from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise GhzFailed(
            f"ghz exited with status {proc.returncode}: {' '.join(err.decode().split())}"
        )
    report = json.loads(out)
    details = report.get("details") or []
    failed = [d for d in details if d.get("error")]
    if failed or not details:
        first = failed[0]["error"] if failed else "no calls reported"
        raise GhzFailed(f"{len(failed)} of {len(details)} ghz calls failed: {first}")
    # Durations are nanoseconds in ghz's JSON report.
    return Sample([d["latency"] / 1e9 for d in details], report["total"] / 1e9)


async def measure_anchors(
    anchors: Anchors, calls: int, rounds: int, concurrency: int, ghz: Path = GHZ
) -> AnchorRun:
    """The Python client's rounds over every target, then ghz's rounds on catalog."""
    samples = await interleave(anchors.targets, calls, rounds, concurrency)
    catalog = anchors.targets[CATALOG][1]
    merged = Sample([], 0.0)
    try:
        for _ in range(rounds):
            sample = await run_ghz(ghz, catalog, calls, concurrency)
            merged.latencies_s += sample.latencies_s
            merged.elapsed_s += sample.elapsed_s
    except GhzFailed as why:
        return AnchorRun(samples, str(why))
    return AnchorRun(samples, merged)


def _figures(sample: Sample) -> tuple[float, float, float]:
    """Median and p99 in seconds, and calls per second."""
    lat = sample.latencies_s
    return statistics.median(lat), percentile(lat, 0.99), sample.calls_per_second


def _ghz_version(binary: Path) -> str:
    """ghz's module version from its build info (`go version -m`), or "" if unknown."""
    try:
        done = subprocess.run(
            ["go", "version", "-m", str(binary)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in done.stdout.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", "github.com/bojand/ghz"] and len(fields) > 2:
            return fields[2]
    return ""


def render_anchors(
    results: dict[int, AnchorRun], anchors: Anchors, command: str, ghz: Path = GHZ
) -> str:
    nginx = f"nginx ({anchors.nginx})" if anchors.nginx else "nginx"
    lines = [
        *header("the anchors: bare grpc.aio and grpc-go echoes, an nginx sidecar pair", command),
        "Setup: one Python grpc.aio client process (`bench.load`); every server on loopback as"
        f" a process of its own. '{BARE}' is `python -m bench.echo_server`: one generic handler"
        f" returning the request's bytes ({len(PAYLOAD)} bytes each way), no interceptors,"
        f" health, reflection or tracing. '{GO}' is the same in grpc-go (bench/echo-go,"
        " raw-bytes codec, an unknown-service handler). The sidecar pair is the bare echo"
        f" behind two {nginx} processes in a chain (client -> client's sidecar -> server's"
        " sidecar -> echo), each `grpc_pass` to an upstream with `keepalive 32`. catalog"
        " (Python) runs with every mesh feature off: MESH_MTLS=off, OTEL_SDK_DISABLED=true, no"
        " metrics, no fault file, no concurrency limit. One connection per round, its first"
        " call outside the clock; rounds go over every target in turn. 'x echo' is the figure"
        f" over the bare echo's at the same concurrency ('{BARE}'); 'added' is the median"
        " minus the bare echo's.",
        "",
        "| in flight | target | calls | median ms | x echo | p99 ms | x echo | calls/s | x echo"
        " | added µs |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, run in results.items():
        base = _figures(run.samples[BARE])
        for label, sample in run.samples.items():
            median, p99, rate = _figures(sample)
            added = "" if label == BARE else f"{(median - base[0]) * 1e6:,.0f}"
            lines.append(
                f"| {concurrency} | {label} | {len(sample.latencies_s)} "
                f"| {median * 1000:.3f} | {median / base[0]:.2f} "
                f"| {p99 * 1000:.3f} | {p99 / base[1]:.2f} "
                f"| {rate:,.0f} | {rate / base[2]:.2f} | {added} |"
            )
    for label, why in anchors.missing.items():
        lines += ["", f"'{label}' is not measured: {why}."]
    lines += ["", *_cross_check(results, ghz)]
    return "\n".join(lines) + "\n"


def _cross_check(results: dict[int, AnchorRun], ghz: Path) -> list[str]:
    version = _ghz_version(ghz) if ghz.is_file() else ""
    named = f"ghz {version}" if version else "ghz"
    lines = [
        f"Cross-check: {CATALOG} from the Python client (the rows above) and from {named}"
        f" (`{GHZ_CALL}`, `--connections 1`, the same calls per round and rounds, run after the"
        " Python client's rounds at each concurrency). 'x Python' is ghz's figure over the"
        " Python client's. Client and server share the machine's cores, so a client that"
        " spends more CPU per call shows fewer calls/s and, with many in flight, longer"
        " latencies: the gap is what the client itself costs.",
        "",
        "| in flight | client | calls | median ms | p99 ms | calls/s | median x Python"
        " | calls/s x Python |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for concurrency, run in results.items():
        python = run.samples[CATALOG]
        p_median, p_p99, p_rate = _figures(python)
        lines.append(
            f"| {concurrency} | Python (bench.load) | {len(python.latencies_s)} "
            f"| {p_median * 1000:.3f} | {p_p99 * 1000:.3f} | {p_rate:,.0f} | | |"
        )
        if isinstance(run.ghz, str):
            notes.append(f"ghz at {concurrency} in flight is not measured: {run.ghz}.")
            continue
        median, p99, rate = _figures(run.ghz)
        lines.append(
            f"| {concurrency} | {named} | {len(run.ghz.latencies_s)} | {median * 1000:.3f} "
            f"| {p99 * 1000:.3f} | {rate:,.0f} | {median / p_median:.2f} | {rate / p_rate:.2f} |"
        )
    return [*lines, *(["", *notes] if notes else [])]
