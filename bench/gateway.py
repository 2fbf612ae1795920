"""What a gateway adds to a call: catalog GetProduct direct, through ours, bare proxies, nginx.

catalog runs once (tracing off); in front of it, each on a free loopback port,
run our gateway (`python -m gateway`, access log on as by default, rate
limiting off: GetProduct's route needs no credential), a second copy with
GATEWAY_ACCESS_LOG=false, `bench.bare_proxy` (a grpc.aio proxy that forwards
bytes and does nothing else: the floor for any Python grpc.aio gateway, so
what ours adds above it is our code), the same with grpcio's sync API
(`--sync`: whether the older API would be a lower floor), the same in Go
(bench/echo-go/proxy, built into .build/bin/proxy-go: what the floor is when
the data path leaves Python), and nginx as the reference gateway:
`grpc_pass` to an upstream block with `keepalive 32`, one process
(`master_process off`), its prefix, configuration and error log in the run's
temporary folder (`bench.nginx`, which `bench.anchors` shares). All of them
take the same calls from `bench.load`, rounds interleaved, and a gateway's
added latency is its median minus the direct median at the same concurrency.
The gateway issue's target is on the 1-in-flight figures: ours adds at most
twice what nginx adds.

nginx comes from `make bench-tools` (.tools/nginx); without it, or if it does
not start, the nginx rows are missing and the results say why; so are the Go
proxy's without its binary.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.checkout import start_mesh
from bench.load import Sample, get_product, interleave
from bench.nginx import NGINX, NginxUnavailable, start_nginx
from bench.report import header, percentile
from localmode.processes import Stack, free_port
from localmode.topology import REPO_ROOT, LocalService

__all__ = [
    "NGINX",
    "PROXY_GO",
    "GatewayTargets",
    "measure_gateways",
    "render_gateway",
    "start_gateways",
]

DIRECT = "direct to catalog"
OURS = "our gateway"
OURS_QUIET = "our gateway, access log off"
BARE = "bare grpc.aio proxy"
BARE_SYNC = "bare grpcio sync proxy"
GO_PROXY = "bare grpc-go proxy"
REFERENCE = "nginx grpc_pass"
PROXY_GO = REPO_ROOT / ".build" / "bin" / "proxy-go"
TARGET_RATIO = 2.0  # ours may add at most this many times what nginx adds
UNTRACED = {"OTEL_SDK_DISABLED": "true"}


@dataclass
class GatewayTargets:
    targets: dict[str, str]  # path -> gRPC target, direct first
    nginx: str  # "nginx/1.22.1", or why nginx is not measured
    go_proxy: str = ""  # why the Go proxy is not measured; empty when it is


def _our_gateway(name: str, catalog: str, access_log: bool, run_dir: Path) -> LocalService:
    listen = f"127.0.0.1:{free_port()}"
    return LocalService(
        name=name,
        command=(sys.executable, "-m", "gateway"),
        environment={
            "GRPC_LISTEN_ADDR": listen,
            "GATEWAY_UPSTREAM_CATALOG": catalog,
            "GATEWAY_RATE_PER_SECOND": "0",
            "GATEWAY_ACCESS_LOG": "true" if access_log else "false",
            **UNTRACED,
        },
        ready=f"grpc://{listen}",
        ports={},
        run_dir=run_dir,
    )


def _bare_proxy(name: str, command: tuple[str, ...], catalog: str, run_dir: Path) -> LocalService:
    """A bare proxy to `catalog`: `command` and its --listen and --upstream."""
    listen = f"127.0.0.1:{free_port()}"
    return LocalService(
        name=name,
        command=(*command, "--listen", listen, "--upstream", catalog),
        environment={},
        ready=f"grpc://{listen}",  # a health check through the proxy reaches catalog's
        ports={},
        run_dir=run_dir,
    )


def start_gateways(
    run_dir: Path, nginx: Path = NGINX, proxy_go: Path = PROXY_GO
) -> tuple[Stack, GatewayTargets]:
    """Starts catalog, our gateway twice, the bare proxies and nginx; stops all if one fails.

    nginx failing to start, or no Go proxy binary, is no failure: the targets
    then lack it and say why.
    """
    stack, mesh = start_mesh(run_dir, ("catalog",), UNTRACED)
    catalog = mesh["catalog"]
    targets = {DIRECT: catalog}
    try:
        for label, name, access_log in (
            (OURS, "gateway", True),
            (OURS_QUIET, "gateway-quiet", False),
        ):
            gateway = _our_gateway(name, catalog, access_log, run_dir)
            stack.start(gateway)
            targets[label] = str(gateway.grpc_target)
        python = (sys.executable, "-m", "bench.bare_proxy")
        proxies = {
            BARE: ("bare-proxy", python),
            BARE_SYNC: ("bare-proxy-sync", (*python, "--sync")),
        }
        go_proxy = ""
        if proxy_go.is_file():
            proxies[GO_PROXY] = ("proxy-go", (str(proxy_go),))
        else:
            go_proxy = f"{proxy_go} is missing (`make bench` builds it from bench/echo-go/proxy)"
        for label, (name, command) in proxies.items():
            proxy = _bare_proxy(name, command, catalog, run_dir)
            stack.start(proxy)
            targets[label] = str(proxy.grpc_target)
        try:
            service, version = start_nginx(
                nginx, catalog, run_dir, lambda proxy: stack.start(proxy, timeout_s=20)
            )
        except NginxUnavailable as why:
            return stack, GatewayTargets(targets, f"not measured: {why}", go_proxy)
        targets[REFERENCE] = str(service.grpc_target)
    except BaseException:
        stack.stop()
        raise
    return stack, GatewayTargets(targets, version, go_proxy)


async def measure_gateways(
    targets: dict[str, str], calls: int, rounds: int, concurrency: int
) -> dict[str, Sample]:
    prepared = {label: (get_product, target) for label, target in targets.items()}
    return await interleave(prepared, calls, rounds, concurrency)


def _added_us(by_path: dict[str, Sample], path: str) -> float:
    median = statistics.median(by_path[path].latencies_s)
    return (median - statistics.median(by_path[DIRECT].latencies_s)) * 1e6


def render_gateway(
    results: dict[int, dict[str, Sample]], started: GatewayTargets, command: str
) -> str:
    nginx = started.nginx
    measured = any(REFERENCE in by_path for by_path in results.values())
    reference = (
        f"nginx ({nginx}) is one process with `grpc_pass` to an upstream with `keepalive 32`"
        if measured
        else f"nginx is {nginx}"
    )
    lines = [
        *header(
            "catalog GetProduct direct, through our gateway, bare proxies and nginx",
            command,
        ),
        "Setup: one Python grpc.aio client process; catalog (Python, OTEL_SDK_DISABLED=true) and"
        " every gateway in front of it run on loopback as processes of their own. 'our gateway'"
        " is `python -m gateway` with its default JSON access log (to a file), rate limiting off"
        " and tracing off; 'access log off' is a second copy with GATEWAY_ACCESS_LOG=false;"
        " 'bare grpc.aio proxy' is `python -m bench.bare_proxy`, one generic handler that"
        " forwards the request bytes to catalog on one channel and returns the response bytes;"
        f" '{BARE_SYNC}' is the same with grpcio's sync API (`--sync`: a server with"
        " a pool of 64 threads, a blocking channel);"
        f" '{GO_PROXY}' is the same in grpc-go (bench/echo-go/proxy, raw-bytes codec, an"
        " unknown-service handler and one client connection)"
        + (f", not measured: {started.go_proxy}" if started.go_proxy else "")
        + f"; {reference}. Rounds go over every path in turn. 'added' is the path's median minus"
        " the direct median at the same concurrency.",
        "",
        "| in flight | path | calls | median ms | p99 ms | calls/s | added µs |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for concurrency, by_path in results.items():
        for path, sample in by_path.items():
            lat = sample.latencies_s
            added = "" if path == DIRECT else f"{_added_us(by_path, path):,.0f}"
            lines.append(
                f"| {concurrency} | {path} | {len(lat)} "
                f"| {statistics.median(lat) * 1000:.3f} | {percentile(lat, 0.99) * 1000:.3f} "
                f"| {sample.calls_per_second:,.0f} | {added} |"
            )
    lines += ["", *_verdict(results.get(1), nginx)]
    return "\n".join(lines) + "\n"


def _verdict(by_path: dict[str, Sample] | None, nginx: str) -> list[str]:
    """The target: ours adds at most TARGET_RATIO x what nginx adds (median, 1 in flight)."""
    goal = (
        f"Target: our gateway adds at most {TARGET_RATIO:g}x what nginx adds (median, 1 in flight)"
    )
    if by_path is None:
        return [f"{goal}: not judged, no run with 1 in flight."]
    if REFERENCE not in by_path:
        return [f"{goal}: not judged, nginx {nginx}."]
    reference = _added_us(by_path, REFERENCE)
    lines = [
        f"{goal}. nginx adds {reference:,.0f} µs.",
        "",
        "| gateway | added µs | x nginx's |",
        "|---|---:|---:|",
    ]
    for path in (OURS, OURS_QUIET, BARE, BARE_SYNC, GO_PROXY, REFERENCE):
        if path not in by_path:
            continue
        added = _added_us(by_path, path)
        ratio = f"{added / reference:.2f}" if reference > 0 else "n/a"
        lines.append(f"| {path} | {added:,.0f} | {ratio} |")
    lines += ["", _floor(by_path), *_other_floors(by_path, reference)]
    ours = _added_us(by_path, OURS)
    if reference <= 0:
        return [*lines, "", "Not judged: nginx added nothing measurable in this run."]
    met = "met" if ours <= TARGET_RATIO * reference else "not met"
    return [*lines, "", f"Target {met}: {ours / reference:.2f}x with the access log on."]


def _floor(by_path: dict[str, Sample]) -> str:
    """One sentence: what the bare proxy's row means, and what it leaves to our code."""
    # Whole µs, as in the table, so that the two parts add up to the whole.
    ours, bare = round(_added_us(by_path, OURS)), round(_added_us(by_path, BARE))
    floor = (
        f"'{BARE}' forwards bytes with no metadata, deadline, auth, rate limit, log, tracing"
        " or interceptors, so it is the floor for any Python grpc.aio gateway: what grpc.aio"
        " itself costs to receive a call and make another"
    )
    if ours <= bare:
        return f"{floor}; in this run our gateway added no more than it ({ours:,.0f} µs)."
    share = f" ({bare / ours:.0%} of it)" if bare > 0 else ""
    return (
        f"{floor}; of the {ours:,.0f} µs our gateway adds, {bare:,.0f} µs{share} is that floor"
        f" and {ours - bare:,.0f} µs is our code."
    )


def _other_floors(by_path: dict[str, Sample], reference: float) -> list[str]:
    """What the sync and Go proxies say about where a lower floor lies."""
    lines = []
    aio, target = _added_us(by_path, BARE), TARGET_RATIO * reference
    if BARE_SYNC in by_path:
        sync = _added_us(by_path, BARE_SYNC)
        lower = "a lower" if sync < aio else "no lower"
        lines.append(
            f"grpcio's sync API is {lower} floor: '{BARE_SYNC}' adds {sync:,.0f} µs"
            f" against grpc.aio's {aio:,.0f} µs."
        )
    if GO_PROXY in by_path:
        go = _added_us(by_path, GO_PROXY)
        room = "within" if go <= target else "over"
        lines.append(
            f"'{GO_PROXY}' adds {go:,.0f} µs, {room} the target's {target:,.0f} µs: the floor"
            " when the gateway's data path leaves Python."
        )
    return ["", " ".join(lines)] if lines else []
