"""The traffic policy: the shop's file, the schema check, and gRPC taking the result.

The shop's file is checked for what it decides (which methods each upstream
retries) and for the exact service config it gives catalog. Every kind of
mistake fails naming its line and key. Last, real grpc.aio channels carry the
generated service configs to an in-process server that fails the first
attempts with UNAVAILABLE: a listed method is retried to success, an unlisted
one is not (the control), and a service config gRPC refuses fails the call
(so the acceptance check can fail).
"""

from __future__ import annotations

import collections
import json
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from mesh.breaker import BreakerConfig
from mesh.config import ConfigError, Env
from mesh.traffic import CONTRACTS, DEFAULT_SERVICE_CONFIG, RetryPolicy, TrafficError, TrafficPolicy
from mesh.traffic_file import (
    DEFAULT_TRAFFIC_FILE,
    load_traffic,
    load_traffic_from_env,
    parse_traffic,
    traffic_file,
)
from mesh.yamlschema import REPO_ROOT

TIMEOUT = 10.0
CATALOG = "shop.catalog.v1.CatalogService"
ORDERS = "shop.orders.v1.OrdersService"

# What the shop retries, as the contracts word it: reads, and the writes keyed
# by order_id (inventory) or an idempotency key (payments). PlaceOrder is
# keyed too but left out (mesh/traffic.yaml says why), as is the stream.
EXPECTED_METHODS = {
    "catalog": ("GetProduct", "ListProducts", "SearchProducts"),
    "inventory": ("GetStock", "ReserveStock", "CommitStock", "ReleaseStock"),
    "payments": ("GetPayment", "Charge", "ResolveCharge", "Refund"),
    "orders": ("GetOrder", "ListOrders"),
    "notifications": ("ListNotifications",),
}

CATALOG_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [
        {
            "name": [
                {"service": CATALOG, "method": "GetProduct"},
                {"service": CATALOG, "method": "ListProducts"},
                {"service": CATALOG, "method": "SearchProducts"},
            ],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2.0,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


@pytest.fixture(scope="module")
def shop() -> TrafficPolicy:
    return load_traffic(DEFAULT_TRAFFIC_FILE)


# The shop's file.


def test_the_shops_file_gives_catalog_this_service_config(shop: TrafficPolicy) -> None:
    config = shop.upstream("catalog").service_config()
    assert config == CATALOG_SERVICE_CONFIG
    json.dumps(config)  # JSON-able


def test_the_shops_file_retries_exactly_the_idempotent_methods(shop: TrafficPolicy) -> None:
    assert set(shop.upstreams) == set(CONTRACTS)
    for service, methods in EXPECTED_METHODS.items():
        assert shop.upstream(service).retry.methods == methods, service


def test_every_upstream_gets_the_defaults_it_does_not_override(shop: TrafficPolicy) -> None:
    for service in CONTRACTS:
        upstream = shop.upstream(service)
        assert upstream.breaker == BreakerConfig(
            consecutive_failures=5,
            error_ratio=0.5,
            window_s=10,
            min_calls=20,
            open_s=5,
            half_open_probes=1,
        )
        assert upstream.retry.max_attempts == 3
        assert upstream.retry.retryable_codes == ("UNAVAILABLE",)
        assert upstream.grpc_service == CONTRACTS[service]
    # PlaceOrder runs the saga: its callers wait longer by default.
    assert shop.upstream("orders").deadline_s == 10.0
    assert shop.upstream("catalog").deadline_s == 2.0


def test_the_deadline_is_deadline_propagations_default(shop: TrafficPolicy) -> None:
    # A call made outside any incoming call, with no timeout of its own.
    unbounded = grpc.aio.ClientCallDetails(
        f"/{CONTRACTS['payments']}/Charge", None, None, None, None
    )
    for service, timeout in (("payments", 2.0), ("orders", 10.0)):
        bounded = shop.upstream(service).deadlines().bounded(unbounded)
        assert bounded.timeout == timeout, service


def test_service_config_is_a_fresh_copy(shop: TrafficPolicy) -> None:
    config = shop.upstream("catalog").service_config()
    config["loadBalancingConfig"].append({"pick_first": {}})
    assert DEFAULT_SERVICE_CONFIG["loadBalancingConfig"] == [{"round_robin": {}}]
    assert shop.upstream("catalog").service_config() == CATALOG_SERVICE_CONFIG


def test_an_unknown_upstream_is_a_value_error(shop: TrafficPolicy) -> None:
    for name in ("gateway", "shipping"):
        with pytest.raises(ValueError, match=name):
            shop.upstream(name)


def test_the_file_comes_from_the_environment(tmp_path: Path) -> None:
    assert traffic_file(Env({})) == DEFAULT_TRAFFIC_FILE
    assert traffic_file(Env({"MESH_TRAFFIC_FILE": "mesh/traffic.yaml"})) == (
        REPO_ROOT / "mesh" / "traffic.yaml"
    )
    other = tmp_path / "traffic.yaml"
    other.write_text(BASE.replace("deadline_s: 2.0", "deadline_s: 0.25"))
    policy = load_traffic_from_env(Env({"MESH_TRAFFIC_FILE": str(other)}))
    assert policy.upstream("catalog").deadline_s == 0.25


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"{missing}:0: \(file\): cannot read"):
        load_traffic(missing)


# Merging and the service config of other documents.

BASE = textwrap.dedent(
    """\
    version: 1
    defaults:
      deadline_s: 2.0
      retry:
        max_attempts: 3
        initial_backoff_s: 0.05
        max_backoff_s: 0.5
        backoff_multiplier: 2
        retryable_codes: [UNAVAILABLE]
        methods: []
      retry_throttling: {max_tokens: 10, token_ratio: 0.1}
      breaker: {consecutive_failures: 5, error_ratio: 0.5, window_s: 10, min_calls: 20, open_s: 5, half_open_probes: 1}
    upstreams:
      catalog:
        retry: {methods: [GetProduct, ListProducts]}
    """  # noqa: E501
)


def _with(line: int, text: str) -> str:
    """BASE with its `line` (1-based) replaced by `text` (which may hold several lines)."""
    lines = BASE.splitlines()
    lines[line - 1] = text
    return "\n".join(lines) + "\n"


def test_an_upstream_overrides_key_by_key() -> None:
    policy = parse_traffic(
        BASE
        + textwrap.indent(
            textwrap.dedent(
                """\
                payments:
                  deadline_s: 4
                  retry: {max_attempts: 5, initial_backoff_s: 0.000000001, methods: [Charge]}
                  retry_throttling: {token_ratio: 0.5}
                  breaker: {open_s: 1.5}
                """
            ),
            "  ",
        )
    )
    payments = policy.upstream("payments")
    assert payments.deadline_s == 4.0
    assert payments.retry == RetryPolicy(
        max_attempts=5,
        initial_backoff_s=1e-9,
        max_backoff_s=0.5,
        backoff_multiplier=2.0,
        retryable_codes=("UNAVAILABLE",),
        methods=("Charge",),
    )
    assert payments.retry_throttling.max_tokens == 10
    assert payments.retry_throttling.token_ratio == 0.5
    assert payments.breaker.open_s == 1.5
    assert payments.breaker.consecutive_failures == 5
    retry_policy = payments.service_config()["methodConfig"][0]["retryPolicy"]
    assert retry_policy["initialBackoff"] == "0.000000001s"
    assert retry_policy["maxAttempts"] == 5


def test_an_upstream_not_listed_gets_the_defaults_and_retries_nothing() -> None:
    inventory = parse_traffic(BASE).upstream("inventory")
    assert inventory.retry.methods == ()
    assert inventory.deadline_s == 2.0
    config = inventory.service_config()
    assert "methodConfig" not in config
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_the_breaker_bypass_is_an_upstreams_method_list() -> None:
    policy = parse_traffic(BASE + "  payments:\n    breaker: {bypass: [ResolveCharge]}\n")
    payments = policy.upstream("payments")
    assert payments.breaker_bypass == ("ResolveCharge",)
    assert payments.bypassed_methods() == {"/shop.payments.v1.PaymentsService/ResolveCharge"}
    assert policy.upstream("catalog").bypassed_methods() == frozenset()
    with pytest.raises(TrafficError, match="has no method 'Nope'"):
        parse_traffic(BASE + "  payments:\n    breaker: {bypass: [Nope]}\n")


def test_only_the_called_upstreams_methods_are_checked_against_their_contract() -> None:
    # The gateway checks its own upstreams' names and imports no other contract.
    document = BASE + "  payments:\n    retry: {methods: [Nope]}\n"
    policy = parse_traffic(document, called={"catalog"})
    assert policy.upstream("payments").retry.methods == ("Nope",)
    with pytest.raises(TrafficError, match="has no method 'Nope'"):
        parse_traffic(document, called={"catalog", "payments"})


def test_the_shops_file_bypasses_the_breaker_only_where_an_answer_is_a_verdict(
    shop: TrafficPolicy,
) -> None:
    bypassed = {name: u.breaker_bypass for name, u in shop.upstreams.items() if u.breaker_bypass}
    assert bypassed == {"payments": ("ResolveCharge",), "orders": ("PlaceOrder",)}


# Every kind of mistake names its line, key and problem.

MISTAKES: list[tuple[str, str, int, str, str]] = [
    # (case, document, line, key, problem contains)
    ("unknown key", _with(3, "  deadline: 2.0"), 3, "defaults.deadline", "unknown key"),
    (
        "unknown key in an upstream",
        _with(15, "    retries: {methods: [GetProduct]}"),
        15,
        "upstreams.catalog.retries",
        "unknown key",
    ),
    (
        "unknown key in a block",
        _with(11, "  retry_throttling: {max_tokens: 10, token_ratio: 0.1, burst: 3}"),
        11,
        "defaults.retry_throttling.burst",
        "unknown key",
    ),
    ("missing key", _with(3, ""), 4, "defaults", "missing key(s) deadline_s"),
    (
        "missing key in a block",
        _with(11, "  retry_throttling: {max_tokens: 10}"),
        11,
        "defaults.retry_throttling",
        "missing key(s) token_ratio",
    ),
    (
        "wrong type: text for an integer",
        _with(5, "    max_attempts: three"),
        5,
        "defaults.retry.max_attempts",
        "must be an integer, got a string",
    ),
    (
        "wrong type: a number for an integer",
        _with(5, "    max_attempts: 3.0"),
        5,
        "defaults.retry.max_attempts",
        "must be an integer, got a number",
    ),
    (
        "wrong type: a list for a number",
        _with(3, "  deadline_s: [2]"),
        3,
        "defaults.deadline_s",
        "must be a number, got a list",
    ),
    (
        "wrong type: a boolean for a number",
        _with(3, "  deadline_s: yes"),
        3,
        "defaults.deadline_s",
        "must be a number, got a boolean",
    ),
    (
        "wrong type: a list for a block",
        _with(15, "    retry: [GetProduct]"),
        15,
        "upstreams.catalog.retry",
        "must be a mapping, got a list",
    ),
    (
        "wrong type: codes not a list",
        _with(9, "    retryable_codes: UNAVAILABLE"),
        9,
        "defaults.retry.retryable_codes",
        "must be a list, got a string",
    ),
    (
        "bad code: lower case",
        _with(9, "    retryable_codes: [UNAVAILABLE, unavailable]"),
        9,
        "defaults.retry.retryable_codes[1]",
        "'unavailable' is not a gRPC status code name (write UNAVAILABLE)",
    ),
    (
        "bad code: no such code",
        _with(9, "    retryable_codes: [UNAVAILABLE, TIMEOUT]"),
        9,
        "defaults.retry.retryable_codes[1]",
        "'TIMEOUT' is not a gRPC status code name",
    ),
    (
        "bad code: OK",
        _with(9, "    retryable_codes: [OK]"),
        9,
        "defaults.retry.retryable_codes[0]",
        "'OK' is not a gRPC status code name",
    ),
    (
        "bad code: listed twice",
        _with(9, "    retryable_codes: [UNAVAILABLE, UNAVAILABLE]"),
        9,
        "defaults.retry.retryable_codes[1]",
        "UNAVAILABLE is listed twice",
    ),
    (
        "no codes",
        _with(9, "    retryable_codes: []"),
        9,
        "defaults.retry.retryable_codes",
        "must not be an empty list",
    ),
    (
        "unknown method",
        _with(15, "    retry: {methods: [GetProduct, PlaceOrder]}"),
        15,
        "upstreams.catalog.retry.methods[1]",
        f"{CATALOG} has no method 'PlaceOrder'",
    ),
    (
        "method written in full",
        _with(15, f"    retry: {{methods: [{CATALOG}/GetProduct]}}"),
        15,
        "upstreams.catalog.retry.methods[0]",
        "has no method",
    ),
    (
        "method listed twice",
        _with(15, "    retry: {methods: [GetProduct, GetProduct]}"),
        15,
        "upstreams.catalog.retry.methods[1]",
        "GetProduct is listed twice",
    ),
    (
        "methods in the defaults",
        _with(10, "    methods: [GetProduct]"),
        10,
        "defaults.retry.methods",
        "must be empty here",
    ),
    (
        "unknown service",
        _with(14, "  shipping:"),
        14,
        "upstreams.shipping",
        "unknown upstream 'shipping'",
    ),
    (
        "the gateway is no upstream",
        _with(14, "  gateway:"),
        14,
        "upstreams.gateway",
        "serves no contract of its own",
    ),
    (
        "range: one attempt",
        _with(5, "    max_attempts: 1"),
        5,
        "defaults.retry.max_attempts",
        "must be between 2 and 5, got 1",
    ),
    (
        "range: six attempts",
        _with(5, "    max_attempts: 6"),
        5,
        "defaults.retry.max_attempts",
        "must be between 2 and 5, got 6",
    ),
    (
        "range: zero backoff",
        _with(6, "    initial_backoff_s: 0"),
        6,
        "defaults.retry.initial_backoff_s",
        "must be greater than 0",
    ),
    (
        "range: backoff below a nanosecond",
        _with(6, "    initial_backoff_s: 0.0000000001"),
        6,
        "defaults.retry.initial_backoff_s",
        "must be at least 1ns",
    ),
    (
        "range: negative multiplier",
        _with(8, "    backoff_multiplier: -1"),
        8,
        "defaults.retry.backoff_multiplier",
        "must be greater than 0",
    ),
    (
        "range: max backoff below the initial one, in an upstream",
        _with(15, "    retry: {max_backoff_s: 0.01}"),
        15,
        "upstreams.catalog.retry.max_backoff_s",
        "max_backoff_s (0.01) is below initial_backoff_s (0.05)",
    ),
    (
        "range: zero tokens",
        _with(11, "  retry_throttling: {max_tokens: 0, token_ratio: 0.1}"),
        11,
        "defaults.retry_throttling.max_tokens",
        "must be between 1 and 1000, got 0",
    ),
    (
        "range: too many tokens",
        _with(11, "  retry_throttling: {max_tokens: 1001, token_ratio: 0.1}"),
        11,
        "defaults.retry_throttling.max_tokens",
        "must be between 1 and 1000, got 1001",
    ),
    (
        "range: zero token ratio",
        _with(11, "  retry_throttling: {max_tokens: 10, token_ratio: 0}"),
        11,
        "defaults.retry_throttling.token_ratio",
        "must be between 0.001 and 1000",
    ),
    (
        "range: token ratio with four decimals",
        _with(11, "  retry_throttling: {max_tokens: 10, token_ratio: 0.1234}"),
        11,
        "defaults.retry_throttling.token_ratio",
        "gRPC reads three decimals at most; write 0.123",
    ),
    (
        "range: zero deadline",
        _with(3, "  deadline_s: 0"),
        3,
        "defaults.deadline_s",
        "must be greater than 0",
    ),
    (
        "range: infinite deadline",
        _with(3, "  deadline_s: .inf"),
        3,
        "defaults.deadline_s",
        "must be a finite number",
    ),
    (
        "range: breaker ratio above 1",
        _with(
            12,
            "  breaker: {consecutive_failures: 5, error_ratio: 1.5, window_s: 10, "
            "min_calls: 20, open_s: 5, half_open_probes: 1}",
        ),
        12,
        "defaults.breaker.error_ratio",
        "must be within [0, 1], got 1.5",
    ),
    (
        "range: no probes",
        _with(15, "    breaker: {half_open_probes: 0}"),
        15,
        "upstreams.catalog.breaker.half_open_probes",
        "must be at least 1, got 0",
    ),
    (
        "range: zero open time",
        _with(15, "    breaker: {open_s: 0}"),
        15,
        "upstreams.catalog.breaker.open_s",
        "must be greater than 0",
    ),
    (
        "duplicate key",
        BASE + "  catalog:\n    deadline_s: 1\n",
        16,
        "upstreams.catalog",
        "duplicate key",
    ),
    (
        "merge key",
        _with(15, "    <<: {deadline_s: 1}"),
        15,
        "upstreams.catalog.<<",
        "merge keys are not allowed",
    ),
    ("version", _with(1, "version: 2"), 1, "version", "unsupported version 2"),
    (
        "bad YAML",
        _with(15, "    retry: {methods: [GetProduct"),
        16,
        "(document)",
        "not valid YAML",
    ),
    ("empty document", "# nothing\n", 1, "(document)", "empty"),
]


@pytest.mark.parametrize(
    ("document", "line", "key", "problem"),
    [pytest.param(*case[1:], id=case[0]) for case in MISTAKES],
)
def test_a_mistake_names_its_line_key_and_problem(
    document: str, line: int, key: str, problem: str
) -> None:
    with pytest.raises(TrafficError) as caught:
        parse_traffic(document, "traffic.yaml")
    error = caught.value
    assert isinstance(error, ConfigError)
    assert (error.line, error.key) == (line, key), str(error)
    assert problem in error.problem, str(error)
    assert str(error).startswith(f"traffic.yaml:{line}: {key}: ")


# gRPC takes the generated service config.


if TYPE_CHECKING:  # grpc-stubs makes it generic; grpc's class is not
    _Handler = grpc.GenericRpcHandler[bytes, bytes]
else:
    _Handler = grpc.GenericRpcHandler


class _Flaky(_Handler):
    """Answers every unary method, failing its first `failures` attempts with
    UNAVAILABLE; counts the attempts per method."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: collections.Counter[str] = collections.Counter()

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        if isinstance(method, bytes):  # grpc.aio passes bytes, despite grpc-stubs
            method = method.decode()
        if method.startswith("/grpc.health.v1.Health/"):
            return None

        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            self.attempts[method] += 1
            if self.attempts[method] <= self.failures:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "flaky: try again")
            return b"ok:" + request

        handler: Any = grpc.unary_unary_rpc_method_handler(answer)
        return handler  # type: ignore[no-any-return]


@asynccontextmanager
async def _flaky_server(failures: int) -> AsyncIterator[tuple[_Flaky, int]]:
    flaky = _Flaky(failures)
    server = grpc.aio.server()
    # A health service, as every mesh server has: the config turns on
    # client-side health checking, which watches it.
    health_servicer: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_generic_rpc_handlers([flaky])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield flaky, port
    finally:
        await server.stop(None)


Call = Callable[[str], Awaitable[bytes]]


@asynccontextmanager
async def _channel(port: int, config: dict[str, Any]) -> AsyncIterator[Call]:
    options = [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:

        async def call(method: str) -> bytes:
            unary = channel.unary_unary(method, None, None)
            response: bytes = await unary(b"x", timeout=TIMEOUT)
            return response

        yield call


async def test_grpc_retries_a_listed_method_to_success(shop: TrafficPolicy) -> None:
    method = f"/{CATALOG}/GetProduct"
    async with _flaky_server(failures=2) as (flaky, port):
        async with _channel(port, shop.upstream("catalog").service_config()) as call:
            assert await call(method) == b"ok:x"
        assert flaky.attempts[method] == 3


async def test_grpc_does_not_retry_a_method_left_out(shop: TrafficPolicy) -> None:
    # The control: the same flaky server, a method the policy does not list.
    method = f"/{ORDERS}/PlaceOrder"
    async with _flaky_server(failures=2) as (flaky, port):
        async with _channel(port, shop.upstream("orders").service_config()) as call:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(method)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "flaky" in (caught.value.details() or "")
        assert flaky.attempts[method] == 1


async def test_grpc_accepts_every_upstreams_service_config(shop: TrafficPolicy) -> None:
    async with _flaky_server(failures=1) as (flaky, port):
        for service, methods in EXPECTED_METHODS.items():
            method = f"/{CONTRACTS[service]}/{methods[0]}"
            async with _channel(port, shop.upstream(service).service_config()) as call:
                assert await call(method) == b"ok:x", service
            assert flaky.attempts[method] == 2, service


# What the checks above stand for: gRPC refuses a config out of its ranges and
# fails every call on that channel, so the acceptance tests above can fail.
REFUSED: list[tuple[str, str, Any, str]] = [
    # (case, retryPolicy or retryThrottling field, value, gRPC's field name)
    ("one attempt", "maxAttempts", 1, "maxAttempts"),
    ("zero backoff", "initialBackoff", "0s", "initialBackoff"),
    ("zero multiplier", "backoffMultiplier", 0, "backoffMultiplier"),
    ("a code that is none", "retryableStatusCodes", ["TIMEOUT"], "retryableStatusCodes"),
    ("no codes", "retryableStatusCodes", [], "retryableStatusCodes"),
    ("zero tokens", "maxTokens", 0, "maxTokens"),
    ("a token ratio below three decimals", "tokenRatio", 0.0004, "tokenRatio"),
]


@pytest.mark.parametrize(
    ("field", "value", "named"), [pytest.param(*case[1:], id=case[0]) for case in REFUSED]
)
async def test_grpc_refuses_a_config_out_of_its_ranges(
    shop: TrafficPolicy, field: str, value: Any, named: str
) -> None:
    config = shop.upstream("catalog").service_config()
    if field in config["retryThrottling"]:
        config["retryThrottling"][field] = value
    else:
        config["methodConfig"][0]["retryPolicy"][field] = value
    async with _flaky_server(failures=0) as (flaky, port):
        async with _channel(port, config) as call:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(f"/{CATALOG}/GetProduct")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "service config" in (caught.value.details() or "")
        assert named in (caught.value.details() or "")
        assert not flaky.attempts
