"""Prometheus text to per-edge RED figures, as the services write it."""

from __future__ import annotations

import pytest

from console import redmetrics
from console.redmetrics import EdgeCounts, figures, parse, quantile


def histogram(base: str, labels: str, buckets: dict[str, float], total: float) -> str:
    lines = [f'{base}_bucket{{{labels},le="{le}"}} {count}' for le, count in buckets.items()]
    lines.append(f"{base}_count{{{labels}}} {total}")
    lines.append(f"{base}_sum{{{labels}}} {total * 0.002}")
    return "\n".join(lines)


CLIENT = "rpc_client_call_duration_seconds"
SERVER = "rpc_server_call_duration_seconds"


def gateway_text(ok: float, unavailable: float) -> str:
    ok_labels = 'mesh_callee="orders",rpc_grpc_status_code="OK",rpc_method="PlaceOrder"'
    bad_labels = 'mesh_callee="orders",rpc_grpc_status_code="UNAVAILABLE",rpc_method="PlaceOrder"'
    outside = (
        'mesh_caller="unknown",rpc_grpc_status_code="OK",'
        'rpc_method="GetProduct",rpc_service="shop.catalog.v1.CatalogService"'
    )
    health = (
        'mesh_caller="unknown",rpc_grpc_status_code="OK",'
        'rpc_method="Check",rpc_service="grpc.health.v1.Health"'
    )
    return "\n".join(
        [
            f"# TYPE {CLIENT} histogram",
            histogram(CLIENT, ok_labels, {"0.001": ok / 2, "0.005": ok, "+Inf": ok}, ok),
            histogram(
                CLIENT,
                bad_labels,
                {"0.001": unavailable, "0.005": unavailable, "+Inf": unavailable},
                unavailable,
            ),
            f"# TYPE {SERVER} histogram",
            histogram(SERVER, outside, {"0.001": 3, "0.005": 3, "+Inf": 3}, 3),
            histogram(SERVER, health, {"0.001": 50, "0.005": 50, "+Inf": 50}, 50),
            "# TYPE mesh_breaker_state gauge",
            'mesh_breaker_state{mesh_callee="orders"} 2',
            "",
        ]
    )


def test_edges_come_from_the_callers_side_and_outside_callers_from_the_servers() -> None:
    scrape = parse("gateway", gateway_text(ok=10, unavailable=4))
    assert set(scrape.edges) == {("gateway", "orders"), ("clients", "gateway")}
    orders = scrape.edges[("gateway", "orders")]
    assert (orders.calls, orders.errors) == (14, 4)
    assert orders.buckets[0.001] == 9  # 5 OK + 4 UNAVAILABLE
    # Health checks are not the shop's traffic.
    assert scrape.edges[("clients", "gateway")].calls == 3
    assert scrape.breakers == {("gateway", "orders"): 2}


def test_figures_are_over_the_interval_between_two_scrapes() -> None:
    before = parse("gateway", gateway_text(ok=10, unavailable=0)).edges[("gateway", "orders")]
    now = parse("gateway", gateway_text(ok=30, unavailable=20)).edges[("gateway", "orders")]
    numbers = figures(now, before, interval_s=2.0)
    assert numbers.rate == pytest.approx(20.0)  # 40 calls in 2 s
    assert numbers.error_ratio == pytest.approx(0.5)
    assert numbers.calls == 50
    assert numbers.p50_ms is not None
    assert 0 < numbers.p50_ms <= 1.0
    assert numbers.p99_ms is not None
    assert 1.0 < numbers.p99_ms <= 5.0


def test_the_first_scrape_has_counts_but_no_rates() -> None:
    numbers = figures(EdgeCounts(calls=7), None, None)
    assert (numbers.rate, numbers.error_ratio, numbers.p50_ms, numbers.calls) == (
        None,
        None,
        None,
        7,
    )


def test_a_restarted_process_counts_from_zero() -> None:
    numbers = figures(EdgeCounts(calls=4, buckets={float("inf"): 4}), EdgeCounts(calls=100), 1.0)
    assert numbers.rate == 4


def test_an_idle_edge_has_a_zero_rate_and_no_ratio_or_latency() -> None:
    counts = EdgeCounts(calls=5, buckets={0.001: 5, float("inf"): 5})
    numbers = figures(counts, counts, 2.0)
    assert (numbers.rate, numbers.error_ratio, numbers.p50_ms) == (0.0, None, None)


def test_replicas_add_up_and_a_breaker_shows_its_worst_state() -> None:
    one = parse("gateway", gateway_text(ok=10, unavailable=0))
    two = parse("gateway", gateway_text(ok=4, unavailable=2))
    one.breakers[("gateway", "orders")] = 0
    merged = redmetrics.merge([one, two])
    assert merged.edges[("gateway", "orders")].calls == 16
    assert merged.breakers[("gateway", "orders")] == 2


def test_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.5, {float("inf"): 0.0}) is None
    assert quantile(0.99, {0.1: 0.0, float("inf"): 10.0}) == pytest.approx(0.1)


def test_a_nats_hop_is_an_edge_from_the_subjects_producer_to_the_consumer() -> None:
    name = "messaging_process_duration_seconds"
    ok = 'messaging_destination_name="shop.orders.confirmed",messaging_system="nats"'
    failed = f'{ok},error_type="invalid_event"'
    text = "\n".join(
        [
            f"# TYPE {name} histogram",
            histogram(name, ok, {"0.005": 8, "+Inf": 8}, 8),
            histogram(name, failed, {"0.005": 2, "+Inf": 2}, 2),
            "",
        ]
    )
    scrape = parse("notifications", text)
    hop = scrape.edges[("orders", "notifications")]
    assert (hop.calls, hop.errors) == (10, 2)
    assert scrape.over_nats == {("orders", "notifications")}
    assert redmetrics.merge([scrape]).over_nats == {("orders", "notifications")}
