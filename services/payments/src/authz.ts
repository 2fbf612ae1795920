// The mesh's authorization policy, read by payments: which caller identity
// may call which method, from the one file every service reads
// (mesh/policy.yaml; MESH_POLICY_FILE names another). The same schema, the
// same checks and the same decisions as the Python reader (mesh/policy.py,
// whose docstring describes the file), so a policy one language accepts the
// others accept, and a call one allows the others allow:
//
// - A caller is a shop service name standing for `spiffe://<trust_domain>/<name>`,
//   the one SPIFFE URI SAN of its certificate.
// - A method is `package.Service/Method` or `package.Service/*`; a target
//   serves only its own package (`shop.<target>.v<N>`) and server reflection.
// - Health is open to every caller, with or without an identity; everything
//   else not granted is denied.
// - A mistake in the file throws PolicyError `<file>:<line>: <key>: <problem>`,
//   a ConfigError, so main.ts stops the service at start with that one line.
//
// The file is parsed with `yaml` in its YAML 1.1 mode, and plain scalars are
// typed with PyYAML's own resolvers (below), so `yes`, `01` or `1.0` are what
// they are to the Python reader. `authorizationInterceptor` enforces a policy
// in a grpc-js server (`new grpc.Server({ interceptors: [...] })`) with the
// identity in the TLS peer certificate.
//
// This module loads @grpc/grpc-js only when an interceptor is made, so the
// policy can be loaded before telemetry installs its hook (see main.ts).

import { readFileSync } from "node:fs";
import * as path from "node:path";
import type { PeerCertificate } from "node:tls";

import type * as GrpcModule from "@grpc/grpc-js";
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, Scalar, visit } from "yaml";
import type { Node as YamlNode, Pair } from "yaml";

import { ConfigError } from "./config";
import { log, type Logger } from "./logging";

/** What grpc-js's `call.getAuthContext()` returns (the type is not exported by name). */
export type AuthContext = ReturnType<GrpcModule.ServerInterceptingCallInterface["getAuthContext"]>;

export const POLICY_FILE_VARIABLE = "MESH_POLICY_FILE";
/**
 * The repository root (the image's /app): this file is compiled to
 * `<root>/services/payments/dist/services/payments/src/authz.js`.
 */
export const REPO_ROOT = path.resolve(__dirname, "..", "..", "..", "..", "..", "..");
export const DEFAULT_POLICY_FILE = path.join(REPO_ROOT, "mesh", "policy.yaml");

const VERSION = 1;
/** The shop's services, each one identity; the order is the one messages use. */
export const SERVICES = ["gateway", "catalog", "orders", "inventory", "payments", "notifications"] as const;
export type ServiceName = (typeof SERVICES)[number];
export const HEALTH_SERVICE = "grpc.health.v1.Health";
export const REFLECTION_SERVICES = [
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

const TOP_KEYS = ["version", "trust_domain", "services"] as const;
const RULE_KEYS = ["callers", "methods"] as const;
const IDENT = "[A-Za-z_][A-Za-z0-9_]*";
const METHOD_PATTERN = new RegExp(
  `^(?<service>(?<package>${IDENT}(?:\\.${IDENT})*)\\.${IDENT})/(?<method>${IDENT}|\\*)$`,
);
const METHOD_NAME = new RegExp(`^${IDENT}$`);
// SPIFFE: lower-case letters, digits, dots, dashes and underscores; no empty label.
const TRUST_DOMAIN = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;

const TAG = "tag:yaml.org,2002:";
const STR = `${TAG}str`;
const INT = `${TAG}int`;
const MERGE = `${TAG}merge`;
const KINDS: Readonly<Record<string, string>> = {
  [STR]: "a string",
  [INT]: "an integer",
  [`${TAG}float`]: "a number",
  [`${TAG}bool`]: "a boolean",
  [`${TAG}null`]: "null",
};
// PyYAML's implicit resolvers (yaml/resolver.py, YAML 1.1), tried in this
// order; a plain scalar none matches is a string. `yaml`'s own 1.1 schema
// differs in a few corners (`y` and `n` are booleans there, `1e3` a number),
// which would make the two readers disagree about the same file.
const RESOLVERS: readonly (readonly [string, RegExp])[] = [
  [`${TAG}bool`, /^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$/],
  [
    `${TAG}float`,
    /^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/,
  ],
  [INT, /^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$/],
  [MERGE, /^<<$/],
  [`${TAG}null`, /^(?:~|null|Null|NULL|)$/],
  [
    `${TAG}timestamp`,
    /^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$/,
  ],
  [`${TAG}value`, /^=$/],
];

/**
 * The policy file is unreadable or breaks the schema. The message is
 * `<source>:<line>: <key>: <problem>`; the parts are kept for tests and tools.
 */
export class PolicyError extends ConfigError {
  override name = "PolicyError";

  constructor(
    readonly source: string,
    readonly line: number,
    readonly key: string,
    readonly problem: string,
  ) {
    super(`${source}:${line}: ${key}: ${problem}`);
  }
}

/** One entry of `services.<service>`: these callers may call these methods. */
export interface Rule {
  readonly service: ServiceName;
  readonly callers: readonly ServiceName[];
  /** As written: `pkg.Service/Method` or `pkg.Service/*`. */
  readonly methods: readonly string[];
  readonly line: number;
}

interface Grant {
  /** "/pkg.Service/Method" */
  readonly methods: Set<string>;
  /** "pkg.Service", from "pkg.Service/*" */
  readonly services: Set<string>;
}

function isService(name: string): name is ServiceName {
  return (SERVICES as readonly string[]).includes(name);
}

function checkService(name: string): ServiceName {
  if (!isService(name)) {
    throw new RangeError(`${pyRepr(name)} is not one of the shop's services (${SERVICES.join(", ")})`);
  }
  return name;
}

/** A checked policy and the decision it makes for one call. */
export class Policy {
  private readonly grants = new Map<string, Grant>();

  constructor(
    readonly trustDomain: string,
    readonly rules: readonly Rule[],
    readonly source: string = "<policy>",
  ) {
    for (const rule of rules) {
      for (const caller of rule.callers) {
        const key = grantKey(rule.service, caller);
        let grant = this.grants.get(key);
        if (grant === undefined) {
          grant = { methods: new Set(), services: new Set() };
          this.grants.set(key, grant);
        }
        for (const pattern of rule.methods) {
          const slash = pattern.indexOf("/");
          if (pattern.slice(slash + 1) === "*") {
            grant.services.add(pattern.slice(0, slash));
          } else {
            grant.methods.add(`/${pattern}`);
          }
        }
      }
    }
  }

  /** The SPIFFE ID of `service` in this trust domain. */
  identity(service: string): string {
    return `spiffe://${this.trustDomain}/${checkService(service)}`;
  }

  /**
   * The service `identity` names, or null when it is none of the shop's
   * services in this trust domain (absent, foreign, malformed).
   */
  callerName(identity: string | null | undefined): ServiceName | null {
    const prefix = `spiffe://${this.trustDomain}/`;
    if (identity === null || identity === undefined || !identity.startsWith(prefix)) {
      return null;
    }
    const name = identity.slice(prefix.length);
    return isService(name) ? name : null;
  }

  /**
   * Whether `identity` (a SPIFFE ID; null or undefined without one) may call
   * `method` (`/pkg.Service/Method`, as in grpc-js's `path`) on `service`.
   * Throws RangeError for a `service` that is not the shop's.
   */
  allows(service: string, identity: string | null | undefined, method: string): boolean {
    checkService(service);
    if (method.startsWith(`/${HEALTH_SERVICE}/`)) {
      return true;
    }
    const caller = this.callerName(identity);
    if (caller === null) {
      return false;
    }
    const grant = this.grants.get(grantKey(service, caller));
    if (grant === undefined) {
      return false;
    }
    if (grant.methods.has(method)) {
      return true;
    }
    if (!method.startsWith("/")) {
      return false;
    }
    const rest = method.slice(1);
    const slash = rest.lastIndexOf("/");
    const grpcService = slash < 0 ? "" : rest.slice(0, slash);
    const name = rest.slice(slash + 1);
    return METHOD_NAME.test(name) && grant.services.has(grpcService);
  }

  /** The services that may call some method of `service` (health aside). */
  callersOf(service: string): ServiceName[] {
    const target = checkService(service);
    return SERVICES.filter((name) => this.grants.has(grantKey(target, name)));
  }

  /** The method patterns `caller` may call on `service`, as written, in file order. */
  methodsFor(service: string, caller: string): string[] {
    const target = checkService(service);
    const from = checkService(caller);
    return this.rules
      .filter((rule) => rule.service === target && rule.callers.includes(from))
      .flatMap((rule) => rule.methods);
  }
}

function grantKey(service: string, caller: string): string {
  return `${service}\u0000${caller}`;
}

type Env = Readonly<Record<string, string | undefined>>;

/** The policy file MESH_POLICY_FILE names (relative to the repository root), or the shop's. */
export function policyFile(env: Env = process.env): string {
  const raw = (env[POLICY_FILE_VARIABLE] ?? "").trim();
  if (raw === "") {
    return DEFAULT_POLICY_FILE;
  }
  return path.isAbsolute(raw) ? raw : path.join(REPO_ROOT, raw);
}

export function loadPolicyFromEnv(env: Env = process.env): Policy {
  return loadPolicy(policyFile(env));
}

/** Reads and checks the policy file at `file`; PolicyError names what is wrong. */
export function loadPolicy(file: string): Policy {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(readFileSync(file));
  } catch (error) {
    throw new PolicyError(file, 0, "(file)", `cannot read: ${readProblem(error)}`);
  }
  return parsePolicy(text, file);
}

function readProblem(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const messages: Record<string, string> = {
    ENOENT: "No such file or directory",
    EACCES: "Permission denied",
    EISDIR: "Is a directory",
  };
  if (typeof code === "string" && Object.hasOwn(messages, code)) {
    return messages[code] as string;
  }
  return error instanceof Error ? error.message : String(error);
}

/** Checks a policy document given as text; `source` names it in errors. */
export function parsePolicy(text: string, source = "<policy>"): Policy {
  const lines = new LineCounter();
  // Nodes, not values: they keep each value's line and how it was written,
  // and a duplicate key, which the checker reports by name. Merge keys are
  // reported too (Go's yaml.v3 merges `<<`, PyYAML's composer does not).
  const doc = parseDocument(text, {
    lineCounter: lines,
    version: "1.1",
    uniqueKeys: false,
    merge: false,
    prettyErrors: false,
  });
  const [error] = doc.errors;
  if (error !== undefined) {
    const line = lines.linePos(error.pos[0]).line;
    throw new PolicyError(source, line, "(document)", `not valid YAML: ${error.message.split("\n")[0]}`);
  }
  // PyYAML's composer refuses an alias to no anchor wherever it is; `yaml`
  // leaves it to whoever reads the value.
  visit(doc, {
    Alias(_, alias) {
      if (alias.resolve(doc) === undefined) {
        const line = lines.linePos(alias.range?.[0] ?? 0).line;
        const problem = `not valid YAML: found undefined alias ${pyRepr(alias.source)}`;
        throw new PolicyError(source, line, "(document)", problem);
      }
    },
  });
  if (doc.contents === null) {
    throw new PolicyError(source, 1, "(document)", "empty; expected version, trust_domain, services");
  }
  return new Checker(source, doc, lines).policy(doc.contents);
}

/** A node of the document; null where YAML leaves a value out (`{a}`, `? a`). */
type Value = YamlNode | null;

/** Walks the parsed document; every `fail` names the node's line and key. */
class Checker {
  constructor(
    private readonly source: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  private fail(node: Value, key: string, problem: string, fallbackLine = 1): PolicyError {
    const start = node?.range?.[0];
    const line = start === undefined ? fallbackLine : this.lines.linePos(start).line;
    return new PolicyError(this.source, line, key, problem);
  }

  private line(node: Value, fallbackLine: number): number {
    const start = node?.range?.[0];
    return start === undefined ? fallbackLine : this.lines.linePos(start).line;
  }

  /** An alias stands for the node it names, as in PyYAML's composed graph. */
  private deref(node: unknown): Value {
    if (isAlias(node)) {
      return (node.resolve(this.doc) as YamlNode | undefined) ?? null;
    }
    return (node as YamlNode | null | undefined) ?? null;
  }

  policy(root: YamlNode): Policy {
    const top = this.mapping(root, "(document)", TOP_KEYS, 1);
    this.version(top.version);
    const trustDomain = this.text(top.trust_domain.node, "trust_domain", top.trust_domain.line);
    if (!TRUST_DOMAIN.test(trustDomain)) {
      throw this.fail(
        top.trust_domain.node,
        "trust_domain",
        `${pyRepr(trustDomain)} is not a SPIFFE trust domain (a lower-case name ` +
          "such as shop.local, without spiffe:// or a path)",
        top.trust_domain.line,
      );
    }
    const rules: Rule[] = [];
    for (const entry of this.entries(top.services.node, "services", false, top.services.line)) {
      if (!isService(entry.name)) {
        throw this.fail(entry.keyNode, `services.${entry.name}`, unknown(entry.name, "service"), entry.line);
      }
      rules.push(...this.rules(entry.name, entry.value, `services.${entry.name}`, entry.line));
    }
    return new Policy(trustDomain, rules, this.source);
  }

  private version(field: Field): void {
    const node = field.node;
    if (!isScalar(node) || tagOf(node) !== INT) {
      throw this.fail(node, "version", `must be the integer ${VERSION}, got ${kind(node)}`, field.line);
    }
    if (String(node.source).trim() !== String(VERSION)) {
      throw this.fail(node, "version", `unsupported version ${node.source} (this reader knows ${VERSION})`, field.line);
    }
  }

  private rules(service: ServiceName, node: Value, key: string, fallbackLine: number): Rule[] {
    const granted = new Map<string, number>(); // caller + pattern -> line of the grant
    const rules: Rule[] = [];
    const items = this.items(node, key, fallbackLine);
    const listLine = this.line(node, fallbackLine);
    items.forEach((raw, index) => {
      const item = this.deref(raw);
      const where = `${key}[${index}]`;
      const itemLine = this.line(item, listLine);
      const fields = this.mapping(item, where, RULE_KEYS, itemLine);
      const callers = this.names(fields.callers, `${where}.callers`, "caller");
      const methods = this.methods(fields.methods, `${where}.methods`, service);
      for (const caller of callers) {
        for (const { pattern, node: patternNode, line } of methods) {
          const earlier = granted.get(grantKey(caller, pattern));
          if (earlier !== undefined) {
            throw this.fail(
              patternNode,
              `${where}.methods`,
              `${caller} is already granted ${pattern} at line ${earlier}`,
              line,
            );
          }
          granted.set(grantKey(caller, pattern), line);
        }
      }
      rules.push({ service, callers, methods: methods.map(({ pattern }) => pattern), line: itemLine });
    });
    return rules;
  }

  private names(field: Field, key: string, what: string): ServiceName[] {
    const names: ServiceName[] = [];
    const listLine = this.line(field.node, field.line);
    this.items(field.node, key, field.line).forEach((raw, index) => {
      const item = this.deref(raw);
      const where = `${key}[${index}]`;
      const name = this.text(item, where, listLine);
      if (!isService(name)) {
        throw this.fail(item, where, unknown(name, what), listLine);
      }
      if (names.includes(name)) {
        throw this.fail(item, where, `${name} is listed twice`, listLine);
      }
      names.push(name);
    });
    return names;
  }

  private methods(field: Field, key: string, service: ServiceName): { pattern: string; node: Value; line: number }[] {
    const methods: { pattern: string; node: Value; line: number }[] = [];
    const listLine = this.line(field.node, field.line);
    this.items(field.node, key, field.line).forEach((raw, index) => {
      const item = this.deref(raw);
      const where = `${key}[${index}]`;
      const pattern = this.text(item, where, listLine);
      const match = METHOD_PATTERN.exec(pattern);
      if (match?.groups === undefined) {
        throw this.fail(item, where, `${pyRepr(pattern)} is not package.Service/Method or package.Service/*`, listLine);
      }
      const grpcService = match.groups["service"] as string;
      const pkg = match.groups["package"] as string;
      if (grpcService === HEALTH_SERVICE) {
        throw this.fail(item, where, "health is open to every caller; do not list it", listLine);
      }
      if (
        !(REFLECTION_SERVICES as readonly string[]).includes(grpcService) &&
        !new RegExp(`^shop\\.${service}\\.v[0-9]+$`).test(pkg)
      ) {
        throw this.fail(
          item,
          where,
          `${service} does not serve ${grpcService} (only shop.${service}.v<N> ` +
            `services and ${REFLECTION_SERVICES.join(" or ")})`,
          listLine,
        );
      }
      if (methods.some((seen) => seen.pattern === pattern)) {
        throw this.fail(item, where, `${pattern} is listed twice`, listLine);
      }
      methods.push({ pattern, node: item, line: this.line(item, listLine) });
    });
    return methods;
  }

  /** A mapping with exactly the keys `allowed`. */
  private mapping<K extends string>(
    node: Value,
    key: string,
    allowed: readonly K[],
    fallbackLine: number,
  ): Record<K, Field> {
    const fields = new Map<string, Field>();
    for (const entry of this.entries(node, key, true, fallbackLine)) {
      if (!(allowed as readonly string[]).includes(entry.name)) {
        const problem = `unknown key; expected ${allowed.join(", ")}`;
        throw this.fail(entry.keyNode, child(key, entry.name), problem, entry.line);
      }
      fields.set(entry.name, { node: entry.value, line: entry.valueLine });
    }
    const missing = allowed.filter((name) => !fields.has(name));
    if (missing.length > 0) {
      throw this.fail(node, key, `missing key(s) ${missing.join(", ")}`, fallbackLine);
    }
    return Object.fromEntries(fields) as Record<K, Field>;
  }

  private entries(node: Value, key: string, allowEmpty: boolean, fallbackLine: number): Entry[] {
    if (!isMap(node)) {
      throw this.fail(node, key, `must be a mapping, got ${kind(node)}`, fallbackLine);
    }
    const mapLine = this.line(node, fallbackLine);
    if (node.items.length === 0 && !allowEmpty) {
      throw this.fail(node, key, "must not be empty", fallbackLine);
    }
    const seen = new Set<string>();
    const entries: Entry[] = [];
    for (const pair of node.items as Pair<unknown, unknown>[]) {
      const keyNode = this.deref(pair.key);
      const keyLine = this.line(keyNode, mapLine);
      if (isScalar(keyNode) && tagOf(keyNode) === MERGE) {
        throw this.fail(keyNode, child(key, "<<"), "merge keys are not allowed", keyLine);
      }
      const name = this.text(keyNode, `${key} (a key)`, keyLine);
      if (seen.has(name)) {
        throw this.fail(keyNode, child(key, name), "duplicate key", keyLine);
      }
      seen.add(name);
      const value = this.deref(pair.value);
      entries.push({ name, keyNode, value, line: keyLine, valueLine: this.line(value, keyLine) });
    }
    return entries;
  }

  private items(node: Value, key: string, fallbackLine: number): unknown[] {
    if (!isSeq(node)) {
      throw this.fail(node, key, `must be a list, got ${kind(node)}`, fallbackLine);
    }
    if (node.items.length === 0) {
      throw this.fail(node, key, "must not be an empty list", fallbackLine);
    }
    return node.items;
  }

  private text(node: Value, key: string, fallbackLine: number): string {
    if (!isScalar(node) || tagOf(node) !== STR || String(node.source).trim() === "") {
      throw this.fail(node, key, `must be a non-empty string, got ${kind(node)}`, fallbackLine);
    }
    return String(node.source);
  }
}

interface Field {
  readonly node: Value;
  /** Where to point when the node has no place of its own (an omitted value). */
  readonly line: number;
}

interface Entry {
  readonly name: string;
  readonly keyNode: Value;
  readonly value: Value;
  readonly line: number;
  readonly valueLine: number;
}

/** The YAML tag PyYAML would give this scalar. */
function tagOf(node: Scalar): string {
  if (node.tag !== undefined && node.tag !== "!") {
    return node.tag;
  }
  if (node.tag === "!" || node.type !== Scalar.PLAIN) {
    return STR;
  }
  const text = String(node.source);
  for (const [tag, pattern] of RESOLVERS) {
    if (pattern.test(text)) {
      return tag;
    }
  }
  return STR;
}

function kind(node: Value): string {
  if (node === null) {
    return "null";
  }
  if (isMap(node)) {
    return "a mapping";
  }
  if (isSeq(node)) {
    return "a list";
  }
  if (isScalar(node)) {
    const tag = tagOf(node);
    if (tag === STR && String(node.source).trim() === "") {
      return "an empty string";
    }
    return KINDS[tag] ?? `a ${tag} value`;
  }
  return "an alias";
}

function unknown(name: string, what: string): string {
  return `unknown ${what} ${pyRepr(name)}; expected one of ${SERVICES.join(", ")}`;
}

function child(key: string, name: string): string {
  return key === "(document)" ? name : `${key}.${name}`;
}

/** Python's repr() of a string, as the Python reader's messages quote values. */
export function pyRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let body = "";
  for (const char of text) {
    const code = char.codePointAt(0) as number;
    if (char === "\\" || char === quote) {
      body += `\\${char}`;
    } else if (char === "\n") {
      body += "\\n";
    } else if (char === "\r") {
      body += "\\r";
    } else if (char === "\t") {
      body += "\\t";
    } else if (code < 0x20 || code === 0x7f) {
      body += `\\x${code.toString(16).padStart(2, "0")}`;
    } else {
      body += char;
    }
  }
  return `${quote}${body}${quote}`;
}

// --- the caller's identity and the interceptor ---------------------------------

/**
 * The entries of a certificate's subjectaltname as Node writes it
 * (`URI:spiffe://shop.local/orders, DNS:orders, IP Address:127.0.0.1`; a
 * value with a comma or quote is JSON-quoted), or null if it cannot be read.
 */
export function subjectAltNames(text: string): [string, string][] | null {
  const entry = /([A-Za-z][A-Za-z ]*):("(?:[^"\\]|\\.)*"|[^,"]*)(?:, |$)/y;
  const names: [string, string][] = [];
  while (entry.lastIndex < text.length) {
    const match = entry.exec(text);
    if (match === null) {
      return null;
    }
    const [, type, value] = match as unknown as [string, string, string];
    try {
      names.push([type, value.startsWith('"') ? (JSON.parse(value) as string) : value]);
    } catch {
      return null;
    }
  }
  return names;
}

/**
 * The SPIFFE ID in a peer certificate: its one `spiffe://` URI SAN, in any
 * trust domain (the policy refuses a foreign one, and a denial names it).
 * Null without a certificate, or with no or several SPIFFE IDs (an X.509
 * SVID has exactly one).
 */
export function spiffeIdOf(certificate: PeerCertificate | undefined | null): string | null {
  const text = certificate?.subjectaltname;
  if (typeof text !== "string") {
    return null;
  }
  const uris = (subjectAltNames(text) ?? [])
    .filter(([type, value]) => type === "URI" && value.startsWith("spiffe://"))
    .map(([, value]) => value);
  return uris.length === 1 ? (uris[0] as string) : null;
}

/** The caller's identity on a call: the SPIFFE ID of its verified TLS client certificate. */
export function peerIdentity(context: AuthContext | null | undefined): string | null {
  // grpc-js (1.14 here) gives the certificate only on a TLS connection whose
  // peer it verified against the server's roots; a plaintext one has none.
  return spiffeIdOf(context?.sslPeerCertificate);
}

/** The PERMISSION_DENIED details of a refused call. */
export function denial(identity: string | null, method: string): string {
  return `caller ${identity ?? "no identity"} may not call ${method}`;
}

/**
 * A grpc-js server interceptor that lets through only the calls `policy`
 * allows on `service` (health always), and answers the others
 * PERMISSION_DENIED naming the caller and the method, logged at WARNING.
 * Install it with `new grpc.Server({ interceptors: [...] })`.
 */
export function authorizationInterceptor(
  policy: Policy,
  service: string,
  logger: Logger = log,
): GrpcModule.ServerInterceptor {
  checkService(service);
  const grpc = require("@grpc/grpc-js") as typeof GrpcModule;
  return (methodDescriptor, call) => {
    const method = methodDescriptor.path;
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const identity = peerIdentity(call.getAuthContext());
        if (policy.allows(service, identity, method)) {
          next(metadata);
          return;
        }
        const details = denial(identity, method);
        logger.warning(details, { caller: identity, method, peer: call.getPeer() });
        call.sendStatus({ code: grpc.status.PERMISSION_DENIED, details, metadata: new grpc.Metadata() });
      })
      .build();
    const responder = new grpc.ResponderBuilder().withStart((next) => next(listener)).build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}
