"""Reading a service's Prometheus endpoint (MESH_METRICS_ADDRESS) in tests."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Samples = dict[str, dict[Labels, float]]


def scrape(address: str, timeout_s: float = 10.0) -> Samples:
    """Sample name -> labels -> value, from GET http://<address>/metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def values(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """`name`'s values by the labels `keys` (other labels summed over)."""
    found: dict[tuple[str, ...], float] = {}
    for labels, value in samples.get(name, {}).items():
        as_dict = dict(labels)
        key = tuple(as_dict.get(k, "") for k in keys)
        found[key] = found.get(key, 0.0) + value
    return found
