"""The console's HTTP face: the page (static files built by `make console-web`)
and its JSON API (services/console/README.md). Handlers stay thin; the shaping
is in redmetrics, topology and waterfall, the reading in sources."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from console import faults, topology, waterfall
from console.config import ConsoleConfig
from console.sources import Sources
from tracing import jaeger

STATIC = Path(__file__).parent / "static"
# Polls closer together than this share one scrape: rates over a shorter
# interval are noise, and every open page polls.
MIN_POLL_INTERVAL_S = 1.0
TRACE_WINDOW_S = 30 * 60  # how far back "recent" traces go


class State:
    def __init__(self, config: ConsoleConfig) -> None:
        self.sources = Sources(config.timeout_s)
        self.last: topology.Poll | None = None
        self.document: dict[str, Any] | None = None
        self.lock = asyncio.Lock()


CONFIG = web.AppKey("config", ConsoleConfig)
STATE = web.AppKey("state", State)


async def get_topology(request: web.Request) -> web.Response:
    config, state = request.app[CONFIG], request.app[STATE]
    async with state.lock:
        if (
            state.document is not None
            and state.last is not None
            and time.monotonic() - state.last.at < MIN_POLL_INTERVAL_S
        ):
            return web.json_response(state.document)
        found = dict(
            zip(
                [t.service for t in config.targets],
                await asyncio.gather(*(state.sources.replicas(t) for t in config.targets)),
                strict=True,
            )
        )
        await state.sources.forget_except(
            {r.health_address for replicas in found.values() for r in replicas}
        )
        poll = topology.scrape_all(found)
        state.document = topology.shape(found, poll, state.last)
        state.last = poll
        return web.json_response(state.document)


async def get_traces(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    service = request.query.get("service") or "gateway"
    status = request.query.get("status", "")
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError:
        return _bad("limit: not a number")
    if status not in ("", "ok", "error"):
        return _bad("status: one of ok, error")
    now = time.time_ns()
    try:
        found = await asyncio.to_thread(
            jaeger.find_traces,
            service,
            start_min_ns=now - TRACE_WINDOW_S * 10**9,
            start_max_ns=now + 60 * 10**9,
            limit=limit,
            base_url=config.jaeger_query_url,
            timeout_s=config.timeout_s * 3,
        )
        error = None
    except jaeger.JaegerError as exc:
        found, error = [], str(exc)
    summaries = [waterfall.summary(t) for t in found if t.spans]
    if status:
        summaries = [s for s in summaries if s["error"] == (status == "error")]
    summaries.sort(key=lambda s: s["start"], reverse=True)
    return web.json_response(
        {"traces": summaries, "jaeger_ui": config.jaeger_ui_url, "error": error}
    )


async def get_trace(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    trace_id = request.match_info["trace_id"]
    try:
        trace = await asyncio.to_thread(
            jaeger.get_trace,
            trace_id,
            base_url=config.jaeger_query_url,
            timeout_s=config.timeout_s * 3,
        )
    except ValueError as exc:
        return _bad(f"trace_id: {exc}")
    except jaeger.JaegerError as exc:
        return web.json_response({"error": str(exc)}, status=502)
    if trace is None:
        return web.json_response({"error": f"no trace {trace_id} in Jaeger"}, status=404)
    return web.json_response(
        {
            "trace_id": trace.trace_id,
            "duration_ms": waterfall.duration_ms(trace),
            "rows": waterfall.rows(trace),
            "error": None,
        }
    )


async def get_faults(request: web.Request) -> web.Response:
    try:
        return web.json_response(faults.document(request.app[CONFIG].faults_file))
    except faults.Unwritable as exc:
        return web.json_response({"error": str(exc)}, status=500)


async def put_fault(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _bad("body: not JSON")
    path = request.app[CONFIG].faults_file
    try:
        await asyncio.to_thread(faults.inject, path, request.match_info["service"], body)
    except faults.BadFault as exc:
        return _bad(str(exc))
    except faults.Unwritable as exc:
        return web.json_response({"error": str(exc)}, status=500)
    return web.json_response(faults.document(path))


async def delete_fault(request: web.Request) -> web.Response:
    path = request.app[CONFIG].faults_file
    try:
        await asyncio.to_thread(faults.clear, path, request.match_info["service"])
    except faults.BadFault as exc:
        return _bad(str(exc))
    except faults.Unwritable as exc:
        return web.json_response({"error": str(exc)}, status=500)
    return web.json_response(faults.document(path))


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC / "index.html"
    if not page.exists():
        return web.Response(
            status=503, text="the page is not built: run `make console-web` (or `make build`)\n"
        )
    return web.FileResponse(page)


async def healthz(request: web.Request) -> web.Response:
    """Up: the console itself, whatever the mesh's state (that is the page's job)."""
    return web.Response(text="ok\n")


def make_app(config: ConsoleConfig) -> web.Application:
    app = web.Application()
    app[CONFIG] = config
    app[STATE] = State(config)

    async def close(app: web.Application) -> None:
        await app[STATE].sources.close()

    app.on_cleanup.append(close)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/topology", get_topology)
    app.router.add_get("/api/traces", get_traces)
    app.router.add_get("/api/traces/{trace_id}", get_trace)
    app.router.add_get("/api/faults", get_faults)
    app.router.add_put("/api/faults/{service}", put_fault)
    app.router.add_delete("/api/faults/{service}", delete_fault)
    if STATIC.is_dir():
        app.router.add_static("/static/", STATIC)
    return app
