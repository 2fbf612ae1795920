"""A client's deadline crosses every hop: client -> gateway -> orders -> payments.

The shop runs as deployed (mTLS on), with 5 s of injected delay on each of
payments' calls. A checkout with a 500 ms deadline must end DEADLINE_EXCEEDED
for the client long before the delay would, and payments must see its Charge
cancelled just as long before: orders' call to it carried what was left of
the client's deadline (mesh.deadlines), not orders' own 2 s upstream timeout
(ORDERS_UPSTREAM_TIMEOUT_SECONDS), and payments stops the call's work when
its deadline passes (its log says "call cancelled"). Twenty checkouts; the
figures are printed for the record, the bounds asserted stay loose.
(mesh/tests/test_deadlines.py shows, with a control, that without the
propagation the last hop runs on.)
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from gateway.auth import mint_token
from gateway.config import AuthConfig
from localmode.processes import Stack
from mesh.config import Env
from shop.orders.v1 import orders_pb2_grpc
from tests.conftest import StartStack
from tests.contract.gateway_support import until
from tests.e2e.checkout_support import order_request
from tests.traffic_files import NO_BREAKER, traffic_file

pytestmark = pytest.mark.e2e

STACK = ["nats", "catalog", "inventory", "payments", "orders", "gateway"]
QUIET = {"OTEL_SDK_DISABLED": "true"}
DELAY_MS = 5000
CLIENT_DEADLINE_S = 0.5
CHECKOUTS = 20
CHARGE = "/shop.payments.v1.PaymentsService/Charge"
# Well under orders' own upstream timeout (2 s), which bounds a call that
# carries no deadline of the client's.
BOUNDED_BY_THE_CLIENT_MS = 1000


def cancelled_charges(stack: Stack) -> list[dict[str, object]]:
    lines = stack.log_file("payments").read_text().splitlines()
    found = []
    for line in lines:
        if '"call cancelled"' not in line:
            continue
        record = json.loads(line)
        if record.get("method") == CHARGE:
            found.append(record)
    return found


async def test_the_client_deadline_ends_the_checkout_and_stops_payments(
    start_stack: StartStack, tmp_path: Path
) -> None:
    # Every charge times out here, so payments' breaker would soon refuse the
    # next checkouts' charges before they reach payments: this test is about
    # deadlines, test_breaker about the breaker.
    traffic = {
        "MESH_TRAFFIC_FILE": str(traffic_file(tmp_path / "traffic.yaml", breaker=NO_BREAKER))
    }
    env = {name: {**QUIET, **traffic} for name in STACK}
    env["payments"] = {**QUIET, "FAULT_DELAY_MS": str(DELAY_MS)}
    shop = start_stack(STACK, env=env, mtls=True)
    gateway = shop["gateway"]
    stack = Stack(gateway.run_dir)
    auth = AuthConfig.from_env(Env({**os.environ, **gateway.environment}))

    late_client_ms = []
    deadlines_at: list[float] = []  # wall clock, to set against payments' log times
    async with grpc.aio.insecure_channel(str(gateway.grpc_target)) as channel:
        orders = orders_pb2_grpc.OrdersServiceStub(channel)
        for _ in range(CHECKOUTS):
            customer = f"cus-deadline-{uuid.uuid4().hex[:8]}"
            token = (("authorization", f"Bearer {mint_token(auth, customer, 600)}"),)
            started = time.monotonic()
            deadlines_at.append(time.time() + CLIENT_DEADLINE_S)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await orders.PlaceOrder(
                    order_request(customer, [("prod-chemex", 1)]),
                    metadata=token,
                    timeout=CLIENT_DEADLINE_S,
                )
            elapsed = time.monotonic() - started
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert elapsed < DELAY_MS / 1000 / 2, elapsed  # long before the delay
            late_client_ms.append((elapsed - CLIENT_DEADLINE_S) * 1000)

    # Each checkout's first Charge carries the client's deadline. The saga then
    # carries on by itself, and its later attempts, bounded by orders' own 2 s
    # timeout against the 5 s delay, are cancelled too: those are not counted.
    def first_attempts() -> list[dict[str, object]]:
        found = cancelled_charges(stack)
        bounded = [r for r in found if float(str(r["after_ms"])) < BOUNDED_BY_THE_CLIENT_MS]
        return bounded if len(bounded) >= CHECKOUTS else []

    # The checkouts ran one after another: the n-th such line is the n-th's.
    firsts = (await until(first_attempts))[:CHECKOUTS]
    after_ms = [float(str(r["after_ms"])) for r in firsts]
    late_payments_ms = [
        (datetime.fromisoformat(str(r["time"])).timestamp() - at) * 1000
        for r, at in zip(firsts, deadlines_at, strict=True)
    ]
    assert all(r["deadline_passed"] is True for r in cancelled_charges(stack))
    print(
        f"client saw DEADLINE_EXCEEDED {statistics.median(late_client_ms):.1f} ms after its "
        f"deadline (median of {CHECKOUTS}); payments saw its Charge cancelled "
        f"{statistics.median(late_payments_ms):.1f} ms after the client's deadline "
        f"(median; log times in whole ms), {statistics.median(after_ms):.0f} ms into its call"
    )
