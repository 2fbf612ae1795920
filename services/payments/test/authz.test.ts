// The authorization policy as payments reads it: the shop's file and its
// decisions (the same table as mesh/tests/test_policy.py), the schema check
// with its `<file>:<line>: <key>: <problem>` errors, and the same messages as
// the Python reader, mesh/policy.py, for the same malformed files.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import type * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

import { denial, spiffeIdOf, subjectAltNames } from "../src/authz";
import {
  DEFAULT_POLICY_FILE,
  HEALTH_SERVICE,
  Policy,
  PolicyError,
  REFLECTION_SERVICES,
  REPO_ROOT,
  SERVICES,
} from "../src/policy";
import { loadPolicy, loadPolicyFromEnv, parsePolicy, policyFile } from "../src/policy-file";
import { pyRepr } from "../src/pyyaml";
import { ConfigError, loadConfig } from "../src/config";
import { tempDir } from "../testing/helpers";

const CATALOG = "shop.catalog.v1.CatalogService";
const ORDERS = "shop.orders.v1.OrdersService";
const INVENTORY = "shop.inventory.v1.InventoryService";
const PAYMENTS = "shop.payments.v1.PaymentsService";
const NOTIFICATIONS = "shop.notifications.v1.NotificationsService";
const CONTRACTS: Readonly<Record<string, string>> = {
  catalog: CATALOG,
  orders: ORDERS,
  inventory: INVENTORY,
  payments: PAYMENTS,
  notifications: NOTIFICATIONS,
};
const REFLECTION_METHOD = "ServerReflectionInfo";

// (target, caller) -> the methods allowed, as issue 9 words it: the gateway
// calls the public services; orders prices lines with catalog's GetProduct and
// runs the saga's inventory and payments calls; nobody else calls anybody.
const EXPECTED: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ["catalog/gateway", new Set(["ListProducts", "GetProduct", "SearchProducts"].map((m) => `/${CATALOG}/${m}`))],
  ["orders/gateway", new Set(["PlaceOrder", "GetOrder", "ListOrders"].map((m) => `/${ORDERS}/${m}`))],
  [
    "notifications/gateway",
    new Set(["ListNotifications", "StreamNotifications"].map((m) => `/${NOTIFICATIONS}/${m}`)),
  ],
  ["catalog/orders", new Set([`/${CATALOG}/GetProduct`])],
  ["inventory/orders", new Set(["ReserveStock", "CommitStock", "ReleaseStock"].map((m) => `/${INVENTORY}/${m}`))],
  ["payments/orders", new Set(["Charge", "ResolveCharge", "Refund"].map((m) => `/${PAYMENTS}/${m}`))],
]);

/** Every method of every shop contract (read from protos/), plus reflection and health. */
function allMethods(): string[] {
  const protoDir = loadConfig({}).protoDir;
  const files = Object.keys(CONTRACTS).map((name) => `shop/${name}/v1/${name}.proto`);
  const definition = loadSync(files, { includeDirs: [protoDir] });
  const methods = Object.values(CONTRACTS).flatMap((service) =>
    Object.values(definition[service] as grpc.ServiceDefinition).map((method) => method.path),
  );
  methods.push(...REFLECTION_SERVICES.map((service) => `/${service}/${REFLECTION_METHOD}`));
  methods.push(`/${HEALTH_SERVICE}/Check`, `/${HEALTH_SERVICE}/Watch`);
  return methods;
}

function spiffe(name: string): string {
  return `spiffe://shop.local/${name}`;
}

const policy = loadPolicy(DEFAULT_POLICY_FILE);

test("the shop's policy loads", () => {
  assert.equal(DEFAULT_POLICY_FILE, path.join(REPO_ROOT, "mesh", "policy.yaml"));
  assert.ok(existsSync(DEFAULT_POLICY_FILE), DEFAULT_POLICY_FILE);
  assert.equal(policy.trustDomain, "shop.local");
  assert.equal(policy.source, DEFAULT_POLICY_FILE);
  assert.deepEqual(policy.callersOf("catalog"), ["gateway", "orders"]);
  assert.deepEqual(policy.callersOf("orders"), ["gateway"]);
  assert.deepEqual(policy.callersOf("notifications"), ["gateway"]);
  assert.deepEqual(policy.callersOf("inventory"), ["orders"]);
  assert.deepEqual(policy.callersOf("payments"), ["orders"]);
  assert.deepEqual(policy.callersOf("gateway"), []);
  assert.equal(policy.identity("orders"), "spiffe://shop.local/orders");
  assert.deepEqual(policy.methodsFor("catalog", "orders"), [`${CATALOG}/GetProduct`]);
  assert.deepEqual(policy.methodsFor("inventory", "gateway"), []);
  assert.deepEqual(policy.methodsFor("payments", "orders"), [
    `${PAYMENTS}/Charge`,
    `${PAYMENTS}/ResolveCharge`,
    `${PAYMENTS}/Refund`,
  ]);
});

// [target, caller identity, method, allowed]: mesh/tests/test_policy.py's table.
const DECISIONS: readonly [string, string, string, boolean][] = [
  ["catalog", spiffe("gateway"), `/${CATALOG}/ListProducts`, true],
  ["catalog", spiffe("gateway"), `/${CATALOG}/SearchProducts`, true],
  ["catalog", spiffe("orders"), `/${CATALOG}/GetProduct`, true],
  ["catalog", spiffe("orders"), `/${CATALOG}/ListProducts`, false],
  ["inventory", spiffe("gateway"), `/${INVENTORY}/GetStock`, false],
  ["inventory", spiffe("gateway"), `/${INVENTORY}/ReserveStock`, false],
  ["inventory", spiffe("orders"), `/${INVENTORY}/ReserveStock`, true],
  ["inventory", spiffe("orders"), `/${INVENTORY}/GetStock`, false],
  ["payments", spiffe("orders"), `/${PAYMENTS}/Charge`, true],
  ["payments", spiffe("orders"), `/${PAYMENTS}/GetPayment`, false],
  ["payments", spiffe("catalog"), `/${PAYMENTS}/Charge`, false],
  ["payments", spiffe("gateway"), `/${PAYMENTS}/Charge`, false],
  ["payments", spiffe("gateway"), `/${PAYMENTS}/GetPayment`, false],
  ["orders", spiffe("gateway"), `/${ORDERS}/PlaceOrder`, true],
  ["orders", spiffe("notifications"), `/${ORDERS}/GetOrder`, false],
  ["catalog", spiffe("notifications"), `/${CATALOG}/GetProduct`, false],
  ["notifications", spiffe("gateway"), `/${NOTIFICATIONS}/StreamNotifications`, true],
  ["notifications", spiffe("orders"), `/${NOTIFICATIONS}/ListNotifications`, false],
  // A method of another service's contract, even one the caller may call
  // there, is not granted here.
  ["catalog", spiffe("orders"), `/${INVENTORY}/ReserveStock`, false],
  ["catalog", spiffe("gateway"), `/${ORDERS}/PlaceOrder`, false],
  // A method the contract does not have is still covered by Service/*; the
  // server answers UNIMPLEMENTED.
  ["catalog", spiffe("gateway"), `/${CATALOG}/DeleteEverything`, true],
  ["gateway", spiffe("orders"), `/${CATALOG}/GetProduct`, false],
  // Another trust domain is nobody.
  ["payments", "spiffe://other.domain/orders", `/${PAYMENTS}/Charge`, false],
  ["catalog", "spiffe://other.domain/gateway", `/${CATALOG}/GetProduct`, false],
];

test("decisions: the same table as the Python reader's", () => {
  for (const [service, caller, method, allowed] of DECISIONS) {
    assert.equal(policy.allows(service, caller, method), allowed, `${service} ${caller} ${method}`);
  }
});

test("the full matrix is issue 9's table: only the pairs named, and health", () => {
  const methods = allMethods();
  assert.ok(methods.length > 15, String(methods.length));
  const wrong: string[] = [];
  for (const target of SERVICES) {
    for (const caller of SERVICES) {
      for (const method of methods) {
        const expected =
          method.startsWith(`/${HEALTH_SERVICE}/`) || (EXPECTED.get(`${target}/${caller}`)?.has(method) ?? false);
        if (policy.allows(target, spiffe(caller), method) !== expected) {
          wrong.push(`${target} ${caller} ${method}`);
        }
      }
    }
  }
  assert.deepEqual(wrong, []);
});

test("a caller with no known identity gets health only", () => {
  const identities = [
    null,
    undefined,
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
  ];
  const methods = allMethods();
  for (const identity of identities) {
    for (const service of SERVICES) {
      for (const method of methods) {
        const expected = method.startsWith(`/${HEALTH_SERVICE}/`);
        assert.equal(policy.allows(service, identity, method), expected, `${identity} ${service} ${method}`);
      }
    }
    assert.equal(policy.callerName(identity), null);
  }
});

test("reflection is denied unless listed", () => {
  for (const service of REFLECTION_SERVICES) {
    const method = `/${service}/${REFLECTION_METHOD}`;
    assert.equal(policy.allows("catalog", spiffe("gateway"), method), false);
    assert.equal(policy.allows("inventory", spiffe("orders"), method), false);
  }
  const listed = parsePolicy(
    [
      "version: 1",
      "trust_domain: shop.local",
      "services:",
      "  catalog:",
      "    - callers: [gateway]",
      '      methods: ["grpc.reflection.v1alpha.ServerReflection/*"]',
      "",
    ].join("\n"),
  );
  const v1 = `/grpc.reflection.v1.ServerReflection/${REFLECTION_METHOD}`;
  const v1alpha = `/grpc.reflection.v1alpha.ServerReflection/${REFLECTION_METHOD}`;
  assert.equal(listed.allows("catalog", spiffe("gateway"), v1alpha), true);
  assert.equal(listed.allows("catalog", spiffe("gateway"), v1), false);
  assert.equal(listed.allows("catalog", spiffe("orders"), v1alpha), false);
  assert.equal(listed.allows("orders", spiffe("gateway"), v1alpha), false);
});

test("a malformed method on the wire is denied", () => {
  // The gateway may call every catalog method, but none of these is one
  // (`*` is a wildcard in the file only, not on the wire).
  const methods = [
    `${CATALOG}/GetProduct`,
    `/${CATALOG}/`,
    `/${CATALOG}`,
    `/${CATALOG}/*`,
    `/${CATALOG}/Get Product`,
    `/${CATALOG}/a/GetProduct`,
    `//${CATALOG}/GetProduct`,
    "",
  ];
  for (const method of methods) {
    assert.equal(policy.allows("catalog", spiffe("gateway"), method), false, method);
    assert.equal(policy.allows("catalog", spiffe("orders"), method), false, method);
  }
});

test("an unknown target service is a programming error", () => {
  assert.throws(() => policy.allows("catalogue", spiffe("gateway"), `/${CATALOG}/GetProduct`), {
    name: "RangeError",
    message: /^'catalogue' is not one of the shop's services/,
  });
  assert.throws(() => policy.methodsFor("catalog", "stranger"), /'stranger'/);
});

test("MESH_POLICY_FILE names the file, relative to the repository root", (t) => {
  assert.equal(policyFile({}), DEFAULT_POLICY_FILE);
  assert.equal(policyFile({ MESH_POLICY_FILE: "  " }), DEFAULT_POLICY_FILE);
  assert.equal(policyFile({ MESH_POLICY_FILE: "deploy/policy.yaml" }), path.join(REPO_ROOT, "deploy", "policy.yaml"));
  const absolute = path.join(tempDir(t), "policy.yaml");
  writeFileSync(absolute, readFileSync(DEFAULT_POLICY_FILE));
  assert.equal(policyFile({ MESH_POLICY_FILE: absolute }), absolute);
  assert.equal(loadPolicyFromEnv({ MESH_POLICY_FILE: absolute }).source, absolute);
});

test("a missing file is named, and is a ConfigError (main.ts: exit status 2, one line)", (t) => {
  const missing = path.join(tempDir(t), "nope.yaml");
  assert.throws(() => loadPolicy(missing), (error: unknown) => {
    assert.ok(error instanceof PolicyError);
    assert.ok(error instanceof ConfigError);
    assert.equal(error.message, `${missing}:0: (file): cannot read: No such file or directory`);
    return true;
  });
});

const HEAD = "version: 1\ntrust_domain: shop.local\n";
const RULE = '  catalog:\n    - callers: [gateway]\n      methods: ["shop.catalog.v1.CatalogService/*"]\n';
const GOOD = `${HEAD}services:\n${RULE}`;

// name -> [document, line, key, a fragment of the problem]: the Python
// reader's cases (mesh/tests/test_policy.py), then a few more.
const MALFORMED: Readonly<Record<string, readonly [string, number, string, string]>> = {
  "not yaml": ["version: 1\nservices: [\n", 3, "(document)", "not valid YAML"],
  empty: ["", 1, "(document)", "empty"],
  "a list": ["- 1\n", 1, "(document)", "must be a mapping, got a list"],
  "unknown top key": [`${GOOD}owner: me\n`, 7, "owner", "unknown key"],
  "missing services": [HEAD, 1, "(document)", "missing key(s) services"],
  "duplicate top key": [`${GOOD}version: 1\n`, 7, "version", "duplicate key"],
  "version as text": [GOOD.replace("version: 1", 'version: "1"'), 1, "version", "a string"],
  "version 2": [GOOD.replace("version: 1", "version: 2"), 1, "version", "unsupported version"],
  "trust domain with scheme": [
    GOOD.replace("shop.local", "spiffe://shop.local"),
    2,
    "trust_domain",
    "not a SPIFFE trust domain",
  ],
  "trust domain upper case": [GOOD.replace("shop.local", "Shop.Local"), 2, "trust_domain", "not a SPIFFE trust domain"],
  "trust domain empty label": [
    GOOD.replace("shop.local", "shop..local"),
    2,
    "trust_domain",
    "not a SPIFFE trust domain",
  ],
  "services empty": [`${HEAD}services: {}\n`, 3, "services", "must not be empty"],
  "services a list": [`${HEAD}services: [catalog]\n`, 3, "services", "must be a mapping"],
  "unknown service": [
    `${HEAD}services:\n${RULE.replace("  catalog:", "  catalogue:")}`,
    4,
    "services.catalogue",
    "unknown service 'catalogue'",
  ],
  "service with no rules": [`${HEAD}services:\n  catalog: []\n`, 4, "services.catalog", "must not be an empty list"],
  "rule not a mapping": [
    `${HEAD}services:\n  catalog:\n    - gateway\n`,
    5,
    "services.catalog[0]",
    "must be a mapping, got a string",
  ],
  "unknown rule key": [
    `${GOOD}      method: [x]\n`,
    7,
    "services.catalog[0].method",
    "unknown key; expected callers, methods",
  ],
  "rule without methods": [
    `${HEAD}services:\n  catalog:\n    - callers: [gateway]\n`,
    5,
    "services.catalog[0]",
    "missing key(s) methods",
  ],
  "callers a string": [
    GOOD.replace("[gateway]", "gateway"),
    5,
    "services.catalog[0].callers",
    "must be a list, got a string",
  ],
  "callers empty": [GOOD.replace("[gateway]", "[]"), 5, "services.catalog[0].callers", "must not be an empty list"],
  "unknown caller": [
    GOOD.replace("[gateway]", "[gateway, gatway]"),
    5,
    "services.catalog[0].callers[1]",
    "unknown caller 'gatway'",
  ],
  "caller a number": [
    GOOD.replace("[gateway]", "[7]"),
    5,
    "services.catalog[0].callers[0]",
    "must be a non-empty string, got an integer",
  ],
  "caller twice": [
    GOOD.replace("[gateway]", "[gateway, gateway]"),
    5,
    "services.catalog[0].callers[1]",
    "gateway is listed twice",
  ],
  "caller as identity": [
    GOOD.replace("[gateway]", '["spiffe://shop.local/gateway"]'),
    5,
    "services.catalog[0].callers[0]",
    "unknown caller",
  ],
  "methods empty": [
    GOOD.replace('["shop.catalog.v1.CatalogService/*"]', "[]"),
    6,
    "services.catalog[0].methods",
    "must not be an empty list",
  ],
  "bare star": [
    GOOD.replace("shop.catalog.v1.CatalogService/*", "*"),
    6,
    "services.catalog[0].methods[0]",
    "not package.Service/Method",
  ],
  "no method": [
    GOOD.replace("CatalogService/*", "CatalogService"),
    6,
    "services.catalog[0].methods[0]",
    "not package.Service/Method",
  ],
  "leading slash": [
    GOOD.replace('"shop.', '"/shop.'),
    6,
    "services.catalog[0].methods[0]",
    "not package.Service/Method",
  ],
  "no package": [
    GOOD.replace("shop.catalog.v1.CatalogService/*", "CatalogService/*"),
    6,
    "services.catalog[0].methods[0]",
    "not package.Service/Method",
  ],
  "partial wildcard": [
    GOOD.replace("CatalogService/*", "CatalogService/Get*"),
    6,
    "services.catalog[0].methods[0]",
    "not package.Service/Method",
  ],
  "another service's method": [
    GOOD.replace("shop.catalog.v1.CatalogService/*", "shop.inventory.v1.InventoryService/*"),
    6,
    "services.catalog[0].methods[0]",
    "catalog does not serve shop.inventory.v1.InventoryService",
  ],
  "health listed": [
    GOOD.replace("shop.catalog.v1.CatalogService/*", "grpc.health.v1.Health/*"),
    6,
    "services.catalog[0].methods[0]",
    "health is open to every caller",
  ],
  "method twice": [
    GOOD.replace(
      '["shop.catalog.v1.CatalogService/*"]',
      '["shop.catalog.v1.CatalogService/*", "shop.catalog.v1.CatalogService/*"]',
    ),
    6,
    "services.catalog[0].methods[1]",
    "listed twice",
  ],
  "duplicate rule": [
    GOOD + RULE.replace("  catalog:\n", ""),
    8,
    "services.catalog[1].methods",
    "gateway is already granted shop.catalog.v1.CatalogService/* at line 6",
  ],
  "duplicate service key": [GOOD + RULE, 7, "services.catalog", "duplicate key"],
  "merge key": [`${GOOD}      <<: {callers: [orders]}\n`, 7, "services.catalog[0].<<", "merge keys are not allowed"],
  // Beyond the Python reader's cases: YAML 1.1 typing as PyYAML does it.
  "caller yes": [GOOD.replace("[gateway]", "[gateway, yes]"), 5, "services.catalog[0].callers[1]", "got a boolean"],
  "caller y is a string": [GOOD.replace("[gateway]", "[y]"), 5, "services.catalog[0].callers[0]", "unknown caller 'y'"],
  "version 1.0": [GOOD.replace("version: 1", "version: 1.0"), 1, "version", "must be the integer 1, got a number"],
  "version 01": [GOOD.replace("version: 1", "version: 01"), 1, "version", "unsupported version 01"],
  "version missing a value": [GOOD.replace("version: 1", "version:"), 1, "version", "must be the integer 1, got null"],
  "empty method": [
    GOOD.replace("shop.catalog.v1.CatalogService/*", " "),
    6,
    "services.catalog[0].methods[0]",
    "an empty string",
  ],
  "key not a string": [`${GOOD}1: x\n`, 7, "(document) (a key)", "must be a non-empty string, got an integer"],
  "two documents": [`${GOOD}---\n${GOOD}`, 7, "(document)", "not valid YAML"],
};

test("every malformed policy is refused naming the file, the line and the key", (t) => {
  const file = path.join(tempDir(t), "policy.yaml");
  assert.ok(Object.keys(MALFORMED).length >= 40);
  for (const [name, [document, line, key, problem]] of Object.entries(MALFORMED)) {
    writeFileSync(file, document);
    let caught: unknown;
    try {
      loadPolicy(file);
    } catch (error) {
      caught = error;
    }
    assert.ok(caught instanceof PolicyError, `${name}: ${String(caught)}`);
    assert.deepEqual([caught.line, caught.key], [line, key], `${name}: ${caught.message}`);
    assert.ok(caught.problem.includes(problem), `${name}: ${caught.message}`);
    assert.ok(caught.message.startsWith(`${file}:${line}: ${key}: `), `${name}: ${caught.message}`);
  }
});

test("the good base of the malformed cases loads, aliases and all", () => {
  assert.deepEqual(parsePolicy(GOOD).callersOf("catalog"), ["gateway"]);
  const aliased = parsePolicy(
    `${HEAD}services:\n  catalog:\n    - callers: &both [gateway, orders]\n` +
      '      methods: ["shop.catalog.v1.CatalogService/GetProduct"]\n' +
      '  orders:\n    - callers: *both\n      methods: ["shop.orders.v1.OrdersService/*"]\n',
  );
  assert.deepEqual(aliased.callersOf("orders"), ["gateway", "orders"]);
});

test("an exact method beside a wildcard is allowed (redundant, not an error)", () => {
  const document =
    GOOD + "    - callers: [gateway, orders]\n" + '      methods: ["shop.catalog.v1.CatalogService/GetProduct"]\n';
  const both = parsePolicy(document);
  assert.equal(both.allows("catalog", spiffe("orders"), `/${CATALOG}/GetProduct`), true);
  assert.equal(both.allows("catalog", spiffe("orders"), `/${CATALOG}/ListProducts`), false);
});

/** A policy with one rule: `caller` may call `method` on `service`. */
function rule(service: string, caller: string, method: string): string {
  return `${HEAD}services:\n  ${service}:\n    - callers: [${caller}]\n      methods: ["${method}"]\n`;
}

/** The Python reader's verdict on each document: "ok" or its PolicyError message. */
function pythonVerdicts(documents: readonly string[], source: string): string[] {
  const python = path.join(REPO_ROOT, ".venv", "bin", "python");
  assert.ok(existsSync(python), `${python} is missing: run make tools`);
  const script = [
    "import json, sys",
    "from mesh.policy import PolicyError, parse_policy",
    "out = []",
    "for text in json.load(sys.stdin):",
    "    try:",
    `        parse_policy(text, ${JSON.stringify(source)})`,
    "        out.append('ok')",
    "    except PolicyError as error:",
    "        out.append(str(error))",
    "print(json.dumps(out))",
  ].join("\n");
  const output = execFileSync(python, ["-c", script], { cwd: REPO_ROOT, input: JSON.stringify(documents) });
  return JSON.parse(output.toString()) as string[];
}

test("the same verdicts, to the letter, as the Python reader (mesh/policy.py)", () => {
  const source = "policy.yaml";
  const documents = [
    ...Object.values(MALFORMED).map(([document]) => document),
    GOOD,
    readFileSync(DEFAULT_POLICY_FILE, "utf-8"),
    GOOD.replace("[gateway]", "[n]"),
    GOOD.replace("[gateway]", '["gateway", !!str orders]'),
    GOOD.replace("[gateway]", "[on]"),
    GOOD.replace("[gateway]", "[~]"),
    GOOD.replace("[gateway]", "[2001-12-14]"),
    GOOD.replace("[gateway]", "[!custom gateway]"),
    GOOD.replace("[gateway]", "[[gateway]]"),
    GOOD.replace("[gateway]", "[{gateway: 1}]"),
    GOOD.replace("shop.local", "1e3"),
    GOOD.replace("shop.local", "'it''s'"),
    GOOD.replace("version: 1", "version: 0x1"),
    GOOD.replace("version: 1", "version: !!str 1"),
    GOOD.replace("version: 1", "version: yes"),
    rule("payments", "orders", "shop.payments.v2.PaymentsService/Charge"),
    rule("payments", "orders", "shop.payments.v1.PaymentsService/Get Payment"),
    rule("payments", "orders", "shop.paymentsx.v1.PaymentsService/*"),
    "a: *nope\n",
    `${HEAD}services:\n  catalog: *nope\n`,
    "\tversion: 1\n",
    "services:\n  ? catalog\n",
    "{version: 1, trust_domain: shop.local, services: {catalog}}\n",
    `${HEAD}services:\n  catalog:\n    - callers:\n      methods: [x]\n`,
    `${HEAD}services:\n  catalog:\n    - callers: [gateway]\n      methods:\n        -\n`,
    `${HEAD}services:\n  catalog:\n    - &rule\n      callers: [gateway]\n` +
      '      methods: ["shop.catalog.v1.CatalogService/*"]\n    - *rule\n',
    rule("gateway", "orders", "shop.gateway.v1.Gateway/*"),
  ];
  const python = pythonVerdicts(documents, source);
  const mismatches: string[] = [];
  documents.forEach((document, index) => {
    let ours: string;
    try {
      parsePolicy(document, source);
      ours = "ok";
    } catch (error) {
      assert.ok(error instanceof PolicyError, String(error));
      ours = error.message;
    }
    const theirs = python[index] as string;
    // The two YAML libraries word a syntax error differently (and may place
    // it differently): both must refuse the document as not valid YAML.
    const syntax = ": (document): not valid YAML: ";
    const same = ours.includes(syntax) ? theirs.includes(syntax) : ours === theirs;
    if (!same) {
      mismatches.push(`${JSON.stringify(document)}\n  ts: ${ours}\n  py: ${theirs}`);
    }
  });
  assert.deepEqual(mismatches, []);
});

test("the caller's identity is the one SPIFFE URI SAN of its certificate", () => {
  const san = (subjectaltname: string) => ({ subjectaltname }) as Parameters<typeof spiffeIdOf>[0];
  assert.equal(
    spiffeIdOf(san("URI:spiffe://shop.local/orders, DNS:orders, DNS:localhost, IP Address:127.0.0.1")),
    "spiffe://shop.local/orders",
  );
  assert.equal(spiffeIdOf(san("DNS:orders, URI:spiffe://other.domain/orders")), "spiffe://other.domain/orders");
  assert.equal(spiffeIdOf(san("URI:spiffe://shop.local/orders, URI:spiffe://shop.local/gateway")), null);
  assert.equal(spiffeIdOf(san("URI:https://shop.local/orders, DNS:orders")), null);
  assert.equal(spiffeIdOf(san("DNS:orders")), null);
  assert.equal(spiffeIdOf(san("")), null);
  assert.equal(spiffeIdOf(undefined), null);
  assert.equal(spiffeIdOf({} as Parameters<typeof spiffeIdOf>[0]), null);
  // Node JSON-quotes a value with a comma, so it cannot pass for two names.
  assert.deepEqual(subjectAltNames('URI:"spiffe://shop.local/a, URI:spiffe://shop.local/b", DNS:x'), [
    ["URI", "spiffe://shop.local/a, URI:spiffe://shop.local/b"],
    ["DNS", "x"],
  ]);
  assert.equal(subjectAltNames("garbage"), null);
});

test("a denial names the caller and the method, as mesh/authz.py's does", () => {
  const policy = loadPolicy(DEFAULT_POLICY_FILE);
  const none = { get: () => [] };
  const subject = { get: (key: string) => (key === "x-shop-subject" ? ["customer-1"] : []) };
  assert.equal(
    denial(policy, "payments", spiffe("gateway"), `/${PAYMENTS}/Charge`, none),
    `caller spiffe://shop.local/gateway may not call /${PAYMENTS}/Charge`,
  );
  assert.equal(
    denial(policy, "payments", null, `/${PAYMENTS}/Charge`, null),
    `caller no identity may not call /${PAYMENTS}/Charge`,
  );
  assert.equal(denial(policy, "payments", spiffe("orders"), `/${PAYMENTS}/Charge`, none), null);
  assert.equal(
    denial(policy, "payments", spiffe("orders"), `/${PAYMENTS}/Charge`, subject),
    `caller spiffe://shop.local/orders may not send x-shop-subject (only spiffe://shop.local/gateway may) ` +
      `calling /${PAYMENTS}/Charge`,
  );
  // Health is open to every caller, whatever its metadata says.
  assert.equal(denial(policy, "payments", null, "/grpc.health.v1.Health/Check", subject), null);
  // The policy is asked first: a caller it refuses is refused for that.
  assert.equal(
    denial(policy, "orders", spiffe("orders"), "/shop.orders.v1.OrdersService/GetOrder", subject),
    "caller spiffe://shop.local/orders may not call /shop.orders.v1.OrdersService/GetOrder",
  );
  assert.equal(denial(policy, "orders", spiffe("gateway"), "/shop.orders.v1.OrdersService/GetOrder", subject), null);
});

test("pyRepr quotes as Python's repr() does", () => {
  assert.equal(pyRepr("catalogue"), "'catalogue'");
  assert.equal(pyRepr("it's"), `"it's"`);
  assert.equal(pyRepr(`it's "x"`), `'it\\'s "x"'`);
  assert.equal(pyRepr("a\\b\n"), "'a\\\\b\\n'");
});

test("Policy can be built from rules directly", () => {
  const direct = new Policy("shop.local", [
    { service: "payments", callers: ["orders"], methods: [`${PAYMENTS}/Charge`], line: 1 },
  ]);
  assert.equal(direct.allows("payments", spiffe("orders"), `/${PAYMENTS}/Charge`), true);
  assert.equal(direct.allows("payments", spiffe("orders"), `/${PAYMENTS}/Refund`), false);
});
