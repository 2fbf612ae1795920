"""The authorization policy: the shop's file, its decisions, and the schema check.

The shop's policy is checked three ways: it loads; a full matrix of target x
caller x method (every method of every shop contract, plus health and
reflection) matches the table below, so no method is reachable by a caller
the issue does not name; and every method it lists exists in the generated
descriptors, so a rename in a proto cannot leave a dead rule behind.
"""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor

from mesh.config import ConfigError, Env
from mesh.policy import (
    DEFAULT_POLICY_FILE,
    HEALTH_SERVICE,
    REFLECTION_SERVICES,
    SERVICES,
    Policy,
    PolicyError,
    load_policy,
    load_policy_from_env,
    parse_policy,
    policy_file,
)
from mesh.yamlschema import REPO_ROOT

CATALOG = "shop.catalog.v1.CatalogService"
ORDERS = "shop.orders.v1.OrdersService"
INVENTORY = "shop.inventory.v1.InventoryService"
PAYMENTS = "shop.payments.v1.PaymentsService"
NOTIFICATIONS = "shop.notifications.v1.NotificationsService"
# The gRPC services each shop service serves (the gateway proxies, serves none).
CONTRACTS = {
    "catalog": CATALOG,
    "orders": ORDERS,
    "inventory": INVENTORY,
    "payments": PAYMENTS,
    "notifications": NOTIFICATIONS,
}
REFLECTION_METHOD = "ServerReflectionInfo"

# (target, caller) -> the methods allowed, as the issue words it: the gateway
# calls the public services; orders prices lines with catalog's GetProduct
# (services/orders/orders/upstreams.py) and runs the saga's inventory and
# payments calls; nobody else calls anybody.
EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    ("catalog", "gateway"): frozenset(
        f"/{CATALOG}/{m}" for m in ("ListProducts", "GetProduct", "SearchProducts")
    ),
    ("orders", "gateway"): frozenset(
        f"/{ORDERS}/{m}" for m in ("PlaceOrder", "GetOrder", "ListOrders")
    ),
    ("notifications", "gateway"): frozenset(
        f"/{NOTIFICATIONS}/{m}" for m in ("ListNotifications", "StreamNotifications")
    ),
    ("catalog", "orders"): frozenset({f"/{CATALOG}/GetProduct"}),
    ("inventory", "orders"): frozenset(
        f"/{INVENTORY}/{m}" for m in ("ReserveStock", "CommitStock", "ReleaseStock")
    ),
    ("payments", "orders"): frozenset(
        f"/{PAYMENTS}/{m}" for m in ("Charge", "ResolveCharge", "Refund")
    ),
}


def _descriptor(service: str) -> ServiceDescriptor:
    """The generated descriptor of a `shop.<name>.v<N>.<Service>` service."""
    package = service.rpartition(".")[0]
    name = package.split(".")[1]
    importlib.import_module(f"{package}.{name}_pb2")
    return descriptor_pool.Default().FindServiceByName(service)


def _all_methods() -> list[str]:
    methods = [
        f"/{service}/{method.name}"
        for service in CONTRACTS.values()
        for method in _descriptor(service).methods
    ]
    methods += [f"/{service}/{REFLECTION_METHOD}" for service in REFLECTION_SERVICES]
    methods += [f"/{HEALTH_SERVICE}/Check", f"/{HEALTH_SERVICE}/Watch"]
    return methods


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY_FILE)


def spiffe(name: str) -> str:
    return f"spiffe://shop.local/{name}"


def test_the_shops_policy_loads(policy: Policy) -> None:
    assert policy.trust_domain == "shop.local"
    assert policy.source == str(DEFAULT_POLICY_FILE)
    assert policy.callers_of("catalog") == ("gateway", "orders")
    assert policy.callers_of("orders") == ("gateway",)
    assert policy.callers_of("notifications") == ("gateway",)
    assert policy.callers_of("inventory") == ("orders",)
    assert policy.callers_of("payments") == ("orders",)
    assert policy.callers_of("gateway") == ()
    assert policy.identity("orders") == "spiffe://shop.local/orders"
    assert policy.methods_for("catalog", "orders") == (f"{CATALOG}/GetProduct",)
    assert policy.methods_for("inventory", "gateway") == ()


@pytest.mark.parametrize(
    ("service", "caller", "method", "allowed"),
    [
        ("catalog", spiffe("gateway"), f"/{CATALOG}/ListProducts", True),
        ("catalog", spiffe("gateway"), f"/{CATALOG}/SearchProducts", True),
        ("catalog", spiffe("orders"), f"/{CATALOG}/GetProduct", True),
        ("catalog", spiffe("orders"), f"/{CATALOG}/ListProducts", False),
        ("inventory", spiffe("gateway"), f"/{INVENTORY}/GetStock", False),
        ("inventory", spiffe("gateway"), f"/{INVENTORY}/ReserveStock", False),
        ("inventory", spiffe("orders"), f"/{INVENTORY}/ReserveStock", True),
        ("inventory", spiffe("orders"), f"/{INVENTORY}/GetStock", False),
        ("payments", spiffe("orders"), f"/{PAYMENTS}/Charge", True),
        ("payments", spiffe("catalog"), f"/{PAYMENTS}/Charge", False),
        ("payments", spiffe("gateway"), f"/{PAYMENTS}/GetPayment", False),
        ("orders", spiffe("gateway"), f"/{ORDERS}/PlaceOrder", True),
        ("orders", spiffe("notifications"), f"/{ORDERS}/GetOrder", False),
        ("catalog", spiffe("notifications"), f"/{CATALOG}/GetProduct", False),
        ("notifications", spiffe("gateway"), f"/{NOTIFICATIONS}/StreamNotifications", True),
        ("notifications", spiffe("orders"), f"/{NOTIFICATIONS}/ListNotifications", False),
        # A method of another service's contract, even one the caller may
        # call there, is not granted here.
        ("catalog", spiffe("orders"), f"/{INVENTORY}/ReserveStock", False),
        ("catalog", spiffe("gateway"), f"/{ORDERS}/PlaceOrder", False),
        # A method the contract does not have is still covered by Service/*;
        # the server answers UNIMPLEMENTED.
        ("catalog", spiffe("gateway"), f"/{CATALOG}/DeleteEverything", True),
        ("gateway", spiffe("orders"), f"/{CATALOG}/GetProduct", False),
    ],
)
def test_decisions(policy: Policy, service: str, caller: str, method: str, allowed: bool) -> None:
    assert policy.allows(service, caller, method) is allowed


def test_the_full_matrix_is_the_issues_table(policy: Policy) -> None:
    """Every target x caller x method: only the pairs in EXPECTED, and health."""
    methods = _all_methods()
    assert len(methods) > 15
    wrong = [
        (target, caller, method)
        for target in SERVICES
        for caller in SERVICES
        for method in methods
        if policy.allows(target, spiffe(caller), method)
        != (
            method.startswith(f"/{HEALTH_SERVICE}/")
            or method in EXPECTED.get((target, caller), frozenset())
        )
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "identity",
    [
        None,
        "",
        "orders",
        "spiffe://other.domain/orders",
        "spiffe://evil.shop.local/orders",
        "spiffe://shop.localhost/orders",
        "spiffe://shop.local/orders/extra",
        "spiffe://shop.local/",
        "spiffe://shop.local/stranger",
        "https://shop.local/orders",
        "SPIFFE://SHOP.LOCAL/orders",
    ],
)
def test_no_known_identity_gets_only_health(policy: Policy, identity: str | None) -> None:
    for service in SERVICES:
        for method in _all_methods():
            expected = method.startswith(f"/{HEALTH_SERVICE}/")
            assert policy.allows(service, identity, method) is expected, (service, method)
    assert policy.caller_name(identity) is None


def test_reflection_is_denied_unless_listed(policy: Policy) -> None:
    for service in REFLECTION_SERVICES:
        method = f"/{service}/{REFLECTION_METHOD}"
        assert not policy.allows("catalog", spiffe("gateway"), method)
        assert not policy.allows("inventory", spiffe("orders"), method)
    listed = parse_policy(
        textwrap.dedent(
            """\
            version: 1
            trust_domain: shop.local
            services:
              catalog:
                - callers: [gateway]
                  methods: ["grpc.reflection.v1alpha.ServerReflection/*"]
            """
        )
    )
    v1 = f"/grpc.reflection.v1.ServerReflection/{REFLECTION_METHOD}"
    v1alpha = f"/grpc.reflection.v1alpha.ServerReflection/{REFLECTION_METHOD}"
    assert listed.allows("catalog", spiffe("gateway"), v1alpha)
    assert not listed.allows("catalog", spiffe("gateway"), v1)
    assert not listed.allows("catalog", spiffe("orders"), v1alpha)
    assert not listed.allows("orders", spiffe("gateway"), v1alpha)


@pytest.mark.parametrize(
    "method",
    [
        f"{CATALOG}/GetProduct",  # no leading slash
        f"/{CATALOG}/",
        f"/{CATALOG}",
        f"/{CATALOG}/*",
        f"/{CATALOG}/Get Product",
        f"/{CATALOG}/a/GetProduct",
        f"//{CATALOG}/GetProduct",
        "",
    ],
)
def test_a_malformed_method_is_denied(policy: Policy, method: str) -> None:
    # The gateway may call every catalog method, but none of these is one
    # (`*` is a wildcard in the file only, not on the wire).
    assert not policy.allows("catalog", spiffe("gateway"), method)
    assert not policy.allows("catalog", spiffe("orders"), method)


def test_an_unknown_target_service_is_a_programming_error(policy: Policy) -> None:
    with pytest.raises(ValueError, match="'catalogue' is not one of the shop's services"):
        policy.allows("catalogue", spiffe("gateway"), f"/{CATALOG}/GetProduct")
    with pytest.raises(ValueError, match="'stranger'"):
        policy.methods_for("catalog", "stranger")


def test_every_listed_method_exists_in_the_generated_descriptors(policy: Policy) -> None:
    """A rename in a proto must not leave a rule that grants nothing."""
    assert policy.rules
    for rule in policy.rules:
        for pattern in rule.methods:
            service, _, method = pattern.partition("/")
            if service in REFLECTION_SERVICES:
                names = {REFLECTION_METHOD}
            else:
                assert service == CONTRACTS[rule.service], (rule.line, pattern)
                names = {m.name for m in _descriptor(service).methods}
            assert method == "*" or method in names, f"line {rule.line}: {pattern}"


def test_policy_file_from_the_environment(tmp_path: Path) -> None:
    assert policy_file(Env({})) == DEFAULT_POLICY_FILE
    assert DEFAULT_POLICY_FILE == REPO_ROOT / "mesh" / "policy.yaml"
    relative = policy_file(Env({"MESH_POLICY_FILE": "deploy/policy.yaml"}))
    assert relative == REPO_ROOT / "deploy" / "policy.yaml"
    absolute = tmp_path / "policy.yaml"
    absolute.write_text(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    assert policy_file(Env({"MESH_POLICY_FILE": str(absolute)})) == absolute
    assert load_policy_from_env(Env({"MESH_POLICY_FILE": str(absolute)})).source == str(absolute)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match=r"nope\.yaml:0: \(file\): cannot read"):
        load_policy(missing)
    with pytest.raises(ConfigError):  # so mesh.run stops the service with one line
        load_policy(missing)


HEAD = "version: 1\ntrust_domain: shop.local\n"
RULE = '  catalog:\n    - callers: [gateway]\n      methods: ["shop.catalog.v1.CatalogService/*"]\n'
GOOD = HEAD + "services:\n" + RULE

# (document, line, key, a fragment of the problem)
MALFORMED = {
    "not yaml": ("version: 1\nservices: [\n", 3, "(document)", "not valid YAML"),
    "empty": ("", 1, "(document)", "empty"),
    "a list": ("- 1\n", 1, "(document)", "must be a mapping, got a list"),
    "unknown top key": (GOOD + "owner: me\n", 7, "owner", "unknown key"),
    "missing services": (HEAD, 1, "(document)", "missing key(s) services"),
    "duplicate top key": (GOOD + "version: 1\n", 7, "version", "duplicate key"),
    "version as text": (GOOD.replace("version: 1", 'version: "1"'), 1, "version", "a string"),
    "version 2": (GOOD.replace("version: 1", "version: 2"), 1, "version", "unsupported version"),
    "trust domain with scheme": (
        GOOD.replace("shop.local", "spiffe://shop.local"),
        2,
        "trust_domain",
        "not a SPIFFE trust domain",
    ),
    "trust domain upper case": (
        GOOD.replace("shop.local", "Shop.Local"),
        2,
        "trust_domain",
        "not a SPIFFE trust domain",
    ),
    "trust domain empty label": (
        GOOD.replace("shop.local", "shop..local"),
        2,
        "trust_domain",
        "not a SPIFFE trust domain",
    ),
    "services empty": (HEAD + "services: {}\n", 3, "services", "must not be empty"),
    "services a list": (HEAD + "services: [catalog]\n", 3, "services", "must be a mapping"),
    "unknown service": (
        HEAD + "services:\n" + RULE.replace("  catalog:", "  catalogue:"),
        4,
        "services.catalogue",
        "unknown service 'catalogue'",
    ),
    "service with no rules": (
        HEAD + "services:\n  catalog: []\n",
        4,
        "services.catalog",
        "must not be an empty list",
    ),
    "rule not a mapping": (
        HEAD + "services:\n  catalog:\n    - gateway\n",
        5,
        "services.catalog[0]",
        "must be a mapping, got a string",
    ),
    "unknown rule key": (
        GOOD + "      method: [x]\n",
        7,
        "services.catalog[0].method",
        "unknown key; expected callers, methods",
    ),
    "rule without methods": (
        HEAD + "services:\n  catalog:\n    - callers: [gateway]\n",
        5,
        "services.catalog[0]",
        "missing key(s) methods",
    ),
    "callers a string": (
        GOOD.replace("[gateway]", "gateway"),
        5,
        "services.catalog[0].callers",
        "must be a list, got a string",
    ),
    "callers empty": (
        GOOD.replace("[gateway]", "[]"),
        5,
        "services.catalog[0].callers",
        "must not be an empty list",
    ),
    "unknown caller": (
        GOOD.replace("[gateway]", "[gateway, gatway]"),
        5,
        "services.catalog[0].callers[1]",
        "unknown caller 'gatway'",
    ),
    "caller a number": (
        GOOD.replace("[gateway]", "[7]"),
        5,
        "services.catalog[0].callers[0]",
        "must be a non-empty string, got an integer",
    ),
    "caller twice": (
        GOOD.replace("[gateway]", "[gateway, gateway]"),
        5,
        "services.catalog[0].callers[1]",
        "gateway is listed twice",
    ),
    "caller as identity": (
        GOOD.replace("[gateway]", '["spiffe://shop.local/gateway"]'),
        5,
        "services.catalog[0].callers[0]",
        "unknown caller",
    ),
    "methods empty": (
        GOOD.replace('["shop.catalog.v1.CatalogService/*"]', "[]"),
        6,
        "services.catalog[0].methods",
        "must not be an empty list",
    ),
    "bare star": (
        GOOD.replace("shop.catalog.v1.CatalogService/*", "*"),
        6,
        "services.catalog[0].methods[0]",
        "not package.Service/Method",
    ),
    "no method": (
        GOOD.replace("CatalogService/*", "CatalogService"),
        6,
        "services.catalog[0].methods[0]",
        "not package.Service/Method",
    ),
    "leading slash": (
        GOOD.replace('"shop.', '"/shop.'),
        6,
        "services.catalog[0].methods[0]",
        "not package.Service/Method",
    ),
    "no package": (
        GOOD.replace("shop.catalog.v1.CatalogService/*", "CatalogService/*"),
        6,
        "services.catalog[0].methods[0]",
        "not package.Service/Method",
    ),
    "partial wildcard": (
        GOOD.replace("CatalogService/*", "CatalogService/Get*"),
        6,
        "services.catalog[0].methods[0]",
        "not package.Service/Method",
    ),
    "another service's method": (
        GOOD.replace("shop.catalog.v1.CatalogService/*", "shop.inventory.v1.InventoryService/*"),
        6,
        "services.catalog[0].methods[0]",
        "catalog does not serve shop.inventory.v1.InventoryService",
    ),
    "health listed": (
        GOOD.replace("shop.catalog.v1.CatalogService/*", "grpc.health.v1.Health/*"),
        6,
        "services.catalog[0].methods[0]",
        "health is open to every caller",
    ),
    "method twice": (
        GOOD.replace(
            '["shop.catalog.v1.CatalogService/*"]',
            '["shop.catalog.v1.CatalogService/*", "shop.catalog.v1.CatalogService/*"]',
        ),
        6,
        "services.catalog[0].methods[1]",
        "listed twice",
    ),
    "duplicate rule": (
        GOOD + RULE.replace("  catalog:\n", ""),
        8,
        "services.catalog[1].methods",
        "gateway is already granted shop.catalog.v1.CatalogService/* at line 6",
    ),
    "duplicate service key": (
        GOOD + RULE,
        7,
        "services.catalog",
        "duplicate key",
    ),
    "merge key": (
        GOOD + "      <<: {callers: [orders]}\n",
        7,
        "services.catalog[0].<<",
        "merge keys are not allowed",
    ),
}


@pytest.mark.parametrize(
    ("document", "line", "key", "problem"), MALFORMED.values(), ids=MALFORMED.keys()
)
def test_a_malformed_policy_is_refused_naming_file_line_and_key(
    tmp_path: Path, document: str, line: int, key: str, problem: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    error = caught.value
    assert (error.line, error.key) == (line, key), str(error)
    assert problem in error.problem
    assert str(error).startswith(f"{path}:{line}: {key}: ")


def test_the_good_base_of_the_malformed_cases_loads() -> None:
    policy = parse_policy(GOOD)
    assert policy.callers_of("catalog") == ("gateway",)


def test_an_exact_method_beside_a_wildcard_is_allowed() -> None:
    """Redundant but harmless (the wildcard already grants it): not an error."""
    document = GOOD + (
        "    - callers: [gateway, orders]\n"
        '      methods: ["shop.catalog.v1.CatalogService/GetProduct"]\n'
    )
    policy = parse_policy(document)
    assert policy.allows("catalog", spiffe("orders"), f"/{CATALOG}/GetProduct")
    assert not policy.allows("catalog", spiffe("orders"), f"/{CATALOG}/ListProducts")
