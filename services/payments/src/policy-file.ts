// The mesh's authorization policy file, read by payments: which caller identity
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
// typed with PyYAML's own resolvers (pyyaml.ts), so `yes`, `01` or `1.0` are
// what they are to the Python reader. authz.ts enforces the policy.


import { readFileSync } from "node:fs";
import * as path from "node:path";

import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, visit } from "yaml";
import type { Node as YamlNode, Pair } from "yaml";

import {
  DEFAULT_POLICY_FILE,
  grantKey,
  HEALTH_SERVICE,
  IDENT,
  isService,
  Policy,
  POLICY_FILE_VARIABLE,
  PolicyError,
  REFLECTION_SERVICES,
  REPO_ROOT,
  type Rule,
  SERVICES,
  type ServiceName,
  VERSION,
} from "./policy";
import { INT, KINDS, MERGE, pyRepr, STR, tagOf } from "./pyyaml";

const TOP_KEYS = ["version", "trust_domain", "services"] as const;
const RULE_KEYS = ["callers", "methods"] as const;
const METHOD_PATTERN = new RegExp(
  `^(?<service>(?<package>${IDENT}(?:\\.${IDENT})*)\\.${IDENT})/(?<method>${IDENT}|\\*)$`,
);
// SPIFFE: lower-case letters, digits, dots, dashes and underscores; no empty label.
const TRUST_DOMAIN = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;

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

/** Why a file could not be read, in the words Python's OSError uses. */
export function readProblem(error: unknown): string {
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
  const { doc, lines } = composeDocument(text, (line, key, problem) => new PolicyError(source, line, key, problem));
  if (doc.contents === null) {
    throw new PolicyError(source, 1, "(document)", "empty; expected version, trust_domain, services");
  }
  return new Checker(source, doc, lines).policy(doc.contents);
}

/** Makes the error for `<source>:<line>: <key>: <problem>`. */
export type SchemaFailure = (line: number, key: string, problem: string) => Error;

/**
 * The document's nodes, as PyYAML's composer would build them; `fail` makes
 * the error for invalid YAML (key "(document)"). Shared with fault-file.ts.
 */
export function composeDocument(text: string, fail: SchemaFailure): { doc: Document; lines: LineCounter } {
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
    throw fail(line, "(document)", `not valid YAML: ${error.message.split("\n")[0]}`);
  }
  // PyYAML's composer refuses an alias to no anchor wherever it is; `yaml`
  // leaves it to whoever reads the value.
  visit(doc, {
    Alias(_, alias) {
      if (alias.resolve(doc) === undefined) {
        const line = lines.linePos(alias.range?.[0] ?? 0).line;
        throw fail(line, "(document)", `not valid YAML: found undefined alias ${pyRepr(alias.source)}`);
      }
    },
  });
  return { doc, lines };
}

/** A node of the document; null where YAML leaves a value out (`{a}`, `? a`). */
export type Value = YamlNode | null;

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

/** How a schema error describes a node: "a mapping", "an integer", "null". */
export function kind(node: Value): string {
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

/** The key path of `name` inside `key`. */
export function child(key: string, name: string): string {
  return key === "(document)" ? name : `${key}.${name}`;
}
