"""`make demo`'s resilience act: faults injected at run time, and the mesh coping.

After the shop's story (demo/story.py), through the same gateway, with the
same shopper, each step its own trace:

1. catalog fails 30% of GetProduct calls: the gateway's retries (the traffic
   policy's, gRPC's own) absorb them, so the shopper sees (nearly) all OK;
   in Jaeger, one client span can hold several catalog attempts.
2. catalog fails every call: after 5 failures in a row the gateway's
   circuit breaker for catalog opens and refuses calls at once, naming
   itself; with the fault cleared, the first call after the open time is the
   half-open probe, which closes it.
3. payments answers 3 s late: a checkout with a 1 s deadline ends in
   DEADLINE_EXCEEDED after 1 s, and the deadline reaches payments, which
   stops. (The order carries on by itself once the fault is cleared.)

The faults go into the fault file every service reads again within a second
(`mesh.faultctl`, what `make fault` runs); the act clears it whatever happens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from mesh import faultctl
from mesh.config import Env
from mesh.traffic_file import load_traffic_from_env
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

# demo.story's `step`: runs the call, prints its outcome, finds its trace later.
StepFn = Callable[[str, str, Callable[[], Awaitable[str]]], Awaitable[None]]

GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"
PLACE_ORDER = "/shop.orders.v1.OrdersService/PlaceOrder"
# A service looks at the fault file at most once a second, on a call.
PICKED_UP_S = 1.2
FLAKY_RATIO = 0.3
FLAKY_CALLS = 10
SLOW_PAYMENTS_MS = 3000
CHECKOUT_DEADLINE_S = 1.0


async def _status(call: Awaitable[object]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name}: {error.details()}"
    return "OK"


async def _inject(faults: Path, rules: faultctl.Faults) -> None:
    await asyncio.to_thread(faultctl.write, faults, rules)
    await asyncio.sleep(PICKED_UP_S)


async def resilience_act(
    channel: grpc.aio.Channel,
    signed_in: Any,
    faults: Path,
    order: Callable[[str], orders_pb2.PlaceOrderRequest],
    step: StepFn,
    out: Callable[[str], None],
) -> bool:
    """Plays the three scenes; True when each ended as described above."""
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
    orders = orders_pb2_grpc.OrdersServiceStub(channel)
    # The gateway's own reading of its policy: the same variables, the same file.
    breaker = load_traffic_from_env(Env()).upstream("catalog").breaker
    product = catalog_pb2.GetProductRequest(id="prod-chemex")
    ended_as_told = True

    def get() -> Awaitable[str]:
        return _status(catalog.GetProduct(product, metadata=signed_in, timeout=5))

    out("\nResilience: faults injected at run time (make fault), the mesh coping")
    try:
        await _inject(faults, {"catalog": {"GetProduct": {"error_ratio": FLAKY_RATIO}}})

        async def flaky() -> str:
            outcomes = [await get() for _ in range(FLAKY_CALLS)]
            ok = outcomes.count("OK")
            return (
                f"{ok} of {FLAKY_CALLS} OK with {FLAKY_RATIO:.0%} of catalog's answers failing: "
                "the gateway retried them (mesh/traffic.yaml)"
            )

        await step(f"Catalog {FLAKY_RATIO:.0%} failing", GET_PRODUCT, flaky)

        await _inject(faults, {"catalog": {"*": {"error_ratio": 1}}})
        refusal = ""

        async def breaking() -> str:
            nonlocal refusal
            failed = 0
            for _ in range(breaker.consecutive_failures * 3):
                outcome = await get()
                if "circuit breaker" in outcome:
                    refusal = outcome
                    return f"{failed} calls failed, then at once: {outcome}"
                failed += 1
            return f"{failed} calls failed and the breaker never opened"

        await step("Catalog down", GET_PRODUCT, breaking)
        ended_as_told &= bool(refusal)

        await _inject(faults, {})
        await asyncio.sleep(breaker.open_s)
        probe = ""

        async def recovered() -> str:
            nonlocal probe
            probe = await get()
            return f"{probe}: the half-open probe reached catalog and closed the breaker"

        await step(f"Fault cleared, {breaker.open_s:g} s on", GET_PRODUCT, recovered)
        ended_as_told &= probe == "OK"

        await _inject(faults, {"payments": {"*": {"delay_ms": SLOW_PAYMENTS_MS}}})
        deadline_outcome = ""

        async def slow_checkout() -> str:
            nonlocal deadline_outcome
            started = time.monotonic()
            deadline_outcome = await _status(
                orders.PlaceOrder(
                    order(f"slow-{uuid.uuid4().hex[:6]}"),
                    metadata=signed_in,
                    timeout=CHECKOUT_DEADLINE_S,
                )
            )
            took = time.monotonic() - started
            return (
                f"{deadline_outcome.split(':')[0]} after {took:.2f} s "
                f"(payments {SLOW_PAYMENTS_MS / 1000:g} s late, deadline {CHECKOUT_DEADLINE_S:g} s)"
            )

        await step("Payments slow", PLACE_ORDER, slow_checkout)
        ended_as_told &= deadline_outcome.startswith("DEADLINE_EXCEEDED")
    finally:
        await asyncio.to_thread(faultctl.write, faults, {})
    return ended_as_told
