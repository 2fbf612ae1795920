// The mesh's fault file (MESH_FAULTS_FILE), read by payments: delays and
// injected errors per service and method, switched while the services run.
// The same shape in every language (Python mesh/, Go inventory):
//
//   version: 1                      # optional; if present, 1
//   faults:                         # optional; null or {} = no faults
//     payments:                     # a service (its mesh identity)
//       "*": {delay_ms: 300}        # every method of the service
//     inventory:
//       ReserveStock: {error_ratio: 0.3, error_code: UNAVAILABLE}
//
// A rule has at least one of delay_ms (an integer >= 0), error_ratio (a
// number from 0 to 1) and error_code (a gRPC status code name other than OK;
// UNAVAILABLE when omitted). Only this service's entry is checked in full;
// another service's is only checked to be a mapping of mappings, since the
// file is that service's business. This service's methods are its contract's
// (a typo would otherwise be a rule that never applies).
//
// A mistake throws FaultFileError `<file>:<line>: <key>: <problem>`, in the
// words of the Python reader (mesh/faults.py); the file is parsed as
// policy-file.ts parses the policy (YAML 1.1, PyYAML's scalar types), so the
// readers agree. An empty document holds no rules. What a bad
// file does at run time (a warning, the previous rules kept) is faults.ts's.

import { readFileSync } from "node:fs";

import { status } from "@grpc/grpc-js";
import { isAlias, isMap, isScalar, type Document, type LineCounter, type Pair } from "yaml";
import type { Node as YamlNode } from "yaml";

import { child, composeDocument, kind, readProblem, type Value } from "./policy-file";
import { FLOAT, INT, MERGE, NULL, pyFloat, pyInt, pyRepr, STR, tagOf } from "./pyyaml";

export const FAULTS_VERSION = 1;
/** The method key that stands for every method of the service. */
export const ANY_METHOD = "*";
const TOP_KEYS = ["version", "faults"] as const;
const RULE_KEYS = ["delay_ms", "error_ratio", "error_code"] as const;

/** What to do to one call: wait, then fail with `errorCode` this share of the time. */
export interface FaultRule {
  readonly delayMs: number;
  /** 0 to 1. */
  readonly errorRatio: number;
  readonly errorCode: status;
}

/** This service's rules by method short name (`Charge`) or ANY_METHOD. */
export type FaultRules = ReadonlyMap<string, FaultRule>;

/** The codes a rule may name: every gRPC status but OK. */
export const FAULT_CODES: ReadonlyMap<string, status> = new Map(
  Object.entries(status).filter(
    (entry): entry is [string, status] => typeof entry[1] === "number" && entry[1] !== status.OK,
  ),
);

/** The fault file is unreadable or breaks the schema: `<source>:<line>: <key>: <problem>`. */
export class FaultFileError extends Error {
  override name = "FaultFileError";

  constructor(
    readonly source: string,
    readonly line: number,
    readonly key: string,
    readonly problem: string,
  ) {
    super(`${source}:${line}: ${key}: ${problem}`);
  }
}

/** Reads the fault file at `file`: `service`'s rules, whose methods are `methods`. */
export function loadFaultRules(file: string, service: string, methods: readonly string[]): FaultRules {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(readFileSync(file));
  } catch (error) {
    throw new FaultFileError(file, 0, "(file)", `cannot read: ${readProblem(error)}`);
  }
  return parseFaultRules(text, service, methods, file);
}

/** Checks a fault file given as text; `source` names it in errors. */
export function parseFaultRules(
  text: string,
  service: string,
  methods: readonly string[],
  source = "<faults>",
): FaultRules {
  const { doc, lines } = composeDocument(text, (line, key, problem) => new FaultFileError(source, line, key, problem));
  if (doc.contents === null) {
    return new Map(); // an empty document holds no rules, as in Python
  }
  return new Checker(source, doc, lines, service, methods).rules(doc.contents);
}

interface Entry {
  readonly name: string;
  readonly keyNode: Value;
  readonly value: Value;
  readonly line: number;
}

/** Walks the parsed document; every `fail` names the node's line and key. */
class Checker {
  constructor(
    private readonly source: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
    private readonly service: string,
    private readonly methods: readonly string[],
  ) {}

  private line(node: Value, fallbackLine: number): number {
    const start = node?.range?.[0];
    return start === undefined ? fallbackLine : this.lines.linePos(start).line;
  }

  private fail(node: Value, key: string, problem: string, fallbackLine: number): FaultFileError {
    return new FaultFileError(this.source, this.line(node, fallbackLine), key, problem);
  }

  rules(root: YamlNode): FaultRules {
    const top = this.entries(root, "(document)", 1);
    const unknown = top.find((entry) => !(TOP_KEYS as readonly string[]).includes(entry.name));
    if (unknown !== undefined) {
      throw this.fail(unknown.keyNode, unknown.name, `unknown key; expected ${TOP_KEYS.join(", ")}`, unknown.line);
    }
    const version = top.find((entry) => entry.name === "version");
    if (version !== undefined) {
      this.version(version);
    }
    const faults = top.find((entry) => entry.name === "faults");
    const rules = new Map<string, FaultRule>();
    if (faults === undefined || isNull(faults.value)) {
      return rules;
    }
    for (const entry of this.entries(faults.value, "faults", faults.line)) {
      const key = `faults.${entry.name}`;
      if (isNull(entry.value)) {
        continue;
      }
      for (const method of this.entries(entry.value, key, entry.line)) {
        const where = `${key}.${method.name}`;
        if (entry.name !== this.service) {
          // Another service's: only its shape.
          this.entries(method.value, where, method.line);
          continue;
        }
        if (method.name !== ANY_METHOD && !this.methods.includes(method.name)) {
          const expected = [ANY_METHOD, ...this.methods].join(", ");
          const problem = `unknown method ${pyRepr(method.name)}; expected one of ${expected}`;
          throw this.fail(method.keyNode, where, problem, method.line);
        }
        rules.set(method.name, this.rule(method, where));
      }
    }
    return rules;
  }

  private version(entry: Entry): void {
    const node = entry.value;
    if (!isScalar(node) || tagOf(node) !== INT || String(node.source) !== String(FAULTS_VERSION)) {
      const got = isScalar(node) ? pyRepr(String(node.source)) : kind(node);
      throw this.fail(node, "version", `must be ${FAULTS_VERSION}, got ${got}`, entry.line);
    }
  }

  private rule(method: Entry, key: string): FaultRule {
    const fields = this.entries(method.value, key, method.line);
    if (fields.length === 0) {
      throw this.fail(method.value, key, `a rule needs at least one of ${RULE_KEYS.join(", ")}`, method.line);
    }
    let delayMs = 0;
    let errorRatio = 0;
    let errorCode = status.UNAVAILABLE;
    for (const field of fields) {
      const where = `${key}.${field.name}`;
      const node = field.value;
      const line = this.line(node, field.line);
      switch (field.name) {
        case "delay_ms": {
          if (!isScalar(node) || tagOf(node) !== INT) {
            throw this.fail(node, where, `must be an integer, got ${kind(node)}`, line);
          }
          const value = pyInt(String(node.source));
          if (!Number.isSafeInteger(value) || value < 0) {
            throw this.fail(node, where, `must be at least 0, got ${String(node.source)}`, line);
          }
          delayMs = value;
          break;
        }
        case "error_ratio": {
          const tag = isScalar(node) ? tagOf(node) : null;
          if (!isScalar(node) || (tag !== INT && tag !== FLOAT)) {
            throw this.fail(node, where, `must be a number, got ${kind(node)}`, line);
          }
          const source = String(node.source);
          const value = tag === INT ? pyInt(source) : pyFloat(source);
          if (!(value >= 0 && value <= 1)) {
            throw this.fail(node, where, `must be within [0, 1], got ${source}`, line);
          }
          errorRatio = value;
          break;
        }
        case "error_code": {
          if (!isScalar(node) || tagOf(node) !== STR || String(node.source).trim() === "") {
            throw this.fail(node, where, `must be a non-empty string, got ${kind(node)}`, line);
          }
          const name = String(node.source);
          const code = FAULT_CODES.get(name);
          if (code === undefined) {
            const hint = FAULT_CODES.has(name.toUpperCase()) ? ` (write ${name.toUpperCase()})` : "";
            const problem =
              `${pyRepr(name)} is not a gRPC status code name other than OK${hint}; ` +
              `expected one of ${[...FAULT_CODES.keys()].join(", ")}`;
            throw this.fail(node, where, problem, line);
          }
          errorCode = code;
          break;
        }
        default:
          throw this.fail(field.keyNode, where, `unknown key; expected ${RULE_KEYS.join(", ")}`, field.line);
      }
    }
    return { delayMs, errorRatio, errorCode };
  }

  /** An alias stands for the node it names, as in PyYAML's composed graph. */
  private deref(node: unknown): Value {
    if (isAlias(node)) {
      return (node.resolve(this.doc) as YamlNode | undefined) ?? null;
    }
    return (node as YamlNode | null | undefined) ?? null;
  }

  /** The entries of a mapping with non-empty string keys, each once. */
  private entries(node: Value, key: string, fallbackLine: number): Entry[] {
    if (!isMap(node)) {
      throw this.fail(node, key, `must be a mapping, got ${kind(node)}`, fallbackLine);
    }
    const mapLine = this.line(node, fallbackLine);
    const seen = new Set<string>();
    const entries: Entry[] = [];
    for (const pair of node.items as Pair<unknown, unknown>[]) {
      const keyNode = this.deref(pair.key);
      const line = this.line(keyNode, mapLine);
      if (isScalar(keyNode) && tagOf(keyNode) === MERGE) {
        throw this.fail(keyNode, child(key, "<<"), "merge keys are not allowed", line);
      }
      if (!isScalar(keyNode) || tagOf(keyNode) !== STR || String(keyNode.source).trim() === "") {
        throw this.fail(keyNode, `${key} (a key)`, `must be a non-empty string, got ${kind(keyNode)}`, line);
      }
      const name = String(keyNode.source);
      if (seen.has(name)) {
        throw this.fail(keyNode, child(key, name), "duplicate key", line);
      }
      seen.add(name);
      entries.push({ name, keyNode, value: this.deref(pair.value), line });
    }
    return entries;
  }
}

/** A value left out (`faults:`) or written as null (`~`, `null`). */
function isNull(node: Value): boolean {
  return node === null || (isScalar(node) && tagOf(node) === NULL);
}
