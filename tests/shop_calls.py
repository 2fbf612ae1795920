"""Calls a user makes against a running shop from the host, shared by the
tests of the deployed stacks (tests/compose, tests/kubernetes/cluster):
grpcurl through the gateway, a demo token, a checkout, and which replica
served a service's calls (from Jaeger's API v3)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from localmode.topology import REPO_ROOT
from tests.conftest import GRPCURL
from tracing.jaeger import rfc3339

SIX = {"gateway", "catalog", "orders", "inventory", "payments", "notifications"}
CALL_TIMEOUT_S = 30

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float) -> T:
    """Calls `probe` until it returns something other than None; at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() + every_s > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(every_s)


def run(
    argv: Sequence[str], env: Mapping[str, str], timeout_s: float, check: bool
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv),
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{tail}")
    return result


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {k: v for k, v, *_ in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


@dataclass
class Gateway:
    """The shop's public entry at `address` (host:port, plaintext)."""

    env: dict[str, str]  # what grpcurl and the token minter run with
    keys: dict[str, str]  # the stack's .env: the gateway's JWT key among them
    address: str = ""  # known once the stack runs

    def grpcurl(
        self,
        method: str,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(GRPCURL), "-plaintext", "-max-time", "20"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        if body is not None:
            argv += ["-d", json.dumps(body)]
        argv += [self.address, *method.split()]
        return run(argv, self.env, CALL_TIMEOUT_S, check)

    def call(
        self, method: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.grpcurl(method, body, headers).stdout or "{}")
        return result

    def token(self, subject: str) -> str:
        """A demo JWT for `subject`, signed with the stack's key (`make token`'s program)."""
        env = {**self.env, **self.keys}
        argv = [sys.executable, "-m", "gateway.token", "--sub", subject, "--ttl", "3600"]
        return run(argv, env, 30, True).stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Checkout:
    order_id: str
    trace_id: str


def place_order(gateway: Gateway, customer: str, auth: Mapping[str, str]) -> Checkout:
    """One confirmed checkout through the gateway, in a sampled trace of its own."""
    trace_id = secrets.token_hex(16)
    headers = {**auth, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    reply = gateway.call(
        "shop.orders.v1.OrdersService/PlaceOrder",
        {
            "idempotency_key": f"test-{secrets.token_hex(8)}",
            "customer_id": customer,
            "email": "ada@example.com",
            "lines": [{"product_id": "prod-aeropress", "quantity": 1}],
            "card": {
                "number": "4242424242424242",
                "expiry_month": 12,
                "expiry_year": 2034,
                "cvc": "123",
            },
        },
        headers,
    )
    order = reply["order"]
    assert order["status"] == "ORDER_STATUS_CONFIRMED", reply
    return Checkout(order_id=order["id"], trace_id=trace_id)


def notification_of(
    gateway: Gateway, checkout: Checkout, customer: str, auth: Mapping[str, str]
) -> dict[str, Any] | None:
    reply = gateway.call(
        "shop.notifications.v1.NotificationsService/ListNotifications",
        {"customer_id": customer, "page_size": 10},
        auth,
    )
    mine = [n for n in reply.get("notifications", []) if n["order_id"] == checkout.order_id]
    return mine[0] if mine else None


def spans_per_host(jaeger_url: str, service: str, since_ns: int) -> Counter[str]:
    """How many of `service`'s spans each host (host.name: a container or a
    pod) recorded since `since_ns`.

    Read from the raw OTLP resources of Jaeger's API v3: the typed model in
    tracing/ keeps only service.name.
    """
    query = urllib.parse.urlencode(
        {
            "query.service_name": service,
            "query.start_time_min": rfc3339(since_ns),
            "query.start_time_max": rfc3339(time.time_ns() + 60 * 10**9),
            "query.num_traces": "1000",
        }
    )
    try:
        with urllib.request.urlopen(f"{jaeger_url}/api/v3/traces?{query}", timeout=10) as r:
            document = json.load(r)
    except urllib.error.HTTPError as error:
        if error.code == 404:  # no trace yet
            return Counter()
        raise
    hosts: Counter[str] = Counter()
    for resource_spans in document.get("result", {}).get("resourceSpans", []):
        attributes = {
            a["key"]: next(iter(a.get("value", {}).values()), None)
            for a in resource_spans.get("resource", {}).get("attributes", [])
        }
        if attributes.get("service.name") == service:
            spans = sum(len(s.get("spans", [])) for s in resource_spans.get("scopeSpans", []))
            hosts[str(attributes.get("host.name"))] += spans
    return hosts
