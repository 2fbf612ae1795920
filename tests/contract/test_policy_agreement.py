"""Go's policy reader (services/inventory/internal/authz) agrees with mesh.policy.

Both readers load the same documents: the shop's policy, every malformed case
of mesh/tests/test_policy.py, and a few more where PyYAML and Go's yaml.v3
would type a scalar differently. For each, both must refuse it at the same
line and key with the same problem, or both must allow exactly the same
(service, identity, method) triples of the full matrix: every shop service as
target, every caller identity (the six services, other trust domains,
malformed ones, none), every method of every generated contract plus health,
reflection, unknown and malformed methods.

The Go side is a small command in the authz package,
`internal/authz/decisions`, built once per run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localmode.topology import REPO_ROOT
from mesh.policy import DEFAULT_POLICY_FILE, SERVICES, PolicyError, load_policy
from mesh.tests.test_policy import GOOD, HEAD, MALFORMED, _all_methods

INVENTORY = REPO_ROOT / "services" / "inventory"

IDENTITIES = [
    *(f"spiffe://shop.local/{name}" for name in SERVICES),
    *(f"spiffe://other.domain/{name}" for name in SERVICES),
    "",  # no identity (None to mesh.policy)
    "orders",
    "spiffe://evil.shop.local/orders",
    "spiffe://shop.localhost/orders",
    "spiffe://shop.local/orders/extra",
    "spiffe://shop.local/",
    "spiffe://shop.local/stranger",
    "https://shop.local/orders",
    "SPIFFE://SHOP.LOCAL/orders",
    "spiffe://shop.local/Orders",
]

CATALOG = "shop.catalog.v1.CatalogService"
ODD_METHODS = [
    f"{CATALOG}/GetProduct",
    f"/{CATALOG}/",
    f"/{CATALOG}",
    f"/{CATALOG}/*",
    f"/{CATALOG}/Get Product",
    f"/{CATALOG}/a/GetProduct",
    f"//{CATALOG}/GetProduct",
    f"/{CATALOG}/DeleteEverything",
    "/shop.catalog.v2.CatalogService/GetProduct",
    "/grpc.health.v1.Health/Anything",
    "/grpc.health.v1.HealthX/Check",
    "",
    "/",
]

# Documents beyond MALFORMED: good ones the matrix must agree on, and bad
# ones where yaml.v3's own typing (YAML 1.2) would differ from PyYAML's.
EXTRA = {
    "good base": GOOD,
    "reflection listed": GOOD.replace(
        "shop.catalog.v1.CatalogService/*", "grpc.reflection.v1alpha.ServerReflection/*"
    ),
    "exact beside wildcard": GOOD
    + "    - callers: [gateway, orders]\n"
    + '      methods: ["shop.catalog.v1.CatalogService/GetProduct"]\n',
    "aliases": HEAD
    + "services:\n"
    + "  catalog:\n    - callers: &both [gateway, orders]\n"
    + '      methods: ["shop.catalog.v1.CatalogService/GetProduct"]\n'
    + '  orders:\n    - callers: *both\n      methods: ["shop.orders.v1.OrdersService/*"]\n',
    "trust domain 1e3": GOOD.replace("shop.local", "1e3"),
    "trust domain yes": GOOD.replace("shop.local", "yes"),
    "trust domain 1.5": GOOD.replace("shop.local", "1.5"),
    "caller off": GOOD.replace("[gateway]", "[gateway, off]"),
    "caller null": GOOD.replace("[gateway]", "[~]"),
    "caller timestamp": GOOD.replace("[gateway]", "[2026-11-26]"),
    "caller custom tag": GOOD.replace("[gateway]", "[!svc gateway]"),
    "caller explicit str": GOOD.replace("[gateway]", "[!!str gateway]"),
    "version sexagesimal": GOOD.replace("version: 1", "version: 1:00"),
    "version hex": GOOD.replace("version: 1", "version: 0x1"),
    "version explicit int": GOOD.replace("version: 1", 'version: !!int "1"'),
    "key an integer": GOOD + "1: x\n",
    "quoted merge key": GOOD + '      "<<": x\n',
    "two documents": GOOD + "---\n" + GOOD,
    "empty document": "---\n",
    "only a comment": "# nothing\n",
    "a scalar": "hello\n",
    "method with a quote": GOOD.replace("shop.catalog.v1.CatalogService/*", "it's"),
}


def documents() -> dict[str, str]:
    cases = {f"malformed: {name}": case[0] for name, case in MALFORMED.items()}
    cases.update({f"extra: {name}": text for name, text in EXTRA.items()})
    return cases


def methods() -> list[str]:
    return _all_methods() + ODD_METHODS


def python_answer(path: Path) -> dict[str, Any]:
    try:
        policy = load_policy(path)
    except PolicyError as error:
        return {"error": (error.line, error.key, error.problem, str(error))}
    allowed = {
        (service, identity, method)
        for service in SERVICES
        for identity in IDENTITIES
        for method in methods()
        if policy.allows(service, identity or None, method)
    }
    return {"allowed": allowed}


@pytest.fixture(scope="module")
def decisions_command(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("authz") / "decisions"
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "./internal/authz/decisions"],
        cwd=INVENTORY,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return binary


def test_go_and_python_agree(decisions_command: Path, tmp_path: Path) -> None:
    paths: dict[str, Path] = {"the shop's policy": DEFAULT_POLICY_FILE}
    for index, (name, text) in enumerate(documents().items()):
        path = tmp_path / f"policy-{index}.yaml"
        path.write_text(text, encoding="utf-8")
        paths[name] = path
    paths["missing file"] = tmp_path / "nope.yaml"
    request = {
        "policies": [str(path) for path in paths.values()],
        "services": list(SERVICES),
        "identities": IDENTITIES,
        "methods": methods(),
    }
    result = subprocess.run(
        [str(decisions_command)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert len(answers) == len(paths)

    wrong: list[str] = []
    refused = 0
    for (name, path), go in zip(paths.items(), answers, strict=True):
        go.setdefault("error", None)
        python = python_answer(path)
        if "error" in python:
            refused += 1
            _line, key, problem, message = python["error"]
            if go["error"] is None:
                wrong.append(f"{name}: Python refuses ({message}), Go loads it")
            elif problem.startswith("not valid YAML"):
                # The parsers word syntax errors (and may place them) differently.
                if (go["error"]["key"], go["error"]["problem"][:14]) != (key, problem[:14]):
                    wrong.append(f"{name}: Python {message!r}, Go {go['error']['message']!r}")
            elif go["error"]["message"] != message:
                wrong.append(f"{name}: Python {message!r}, Go {go['error']['message']!r}")
        elif go["error"] is not None:
            wrong.append(f"{name}: Go refuses ({go['error']['message']}), Python loads it")
        else:
            go_allowed = {tuple(triple) for triple in go["allowed"]}
            if go_allowed != python["allowed"]:
                only_go = sorted(go_allowed - python["allowed"])[:5]
                only_python = sorted(python["allowed"] - go_allowed)[:5]
                wrong.append(f"{name}: only Go allows {only_go}; only Python {only_python}")
    assert wrong == []
    # The comparison covered both kinds of answer.
    assert refused >= len(MALFORMED)
    assert len(paths) - refused >= 5
