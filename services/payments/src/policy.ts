// The mesh's authorization policy as payments holds it: the shop's services,
// the checked rules, and the decision for one call. The file is read and
// checked by policy-file.ts, and enforced by authz.ts's interceptor.

import * as path from "node:path";

import { ConfigError, REPO_ROOT } from "./config";
import { pyRepr } from "./pyyaml";

export { REPO_ROOT };

export const POLICY_FILE_VARIABLE = "MESH_POLICY_FILE";
export const DEFAULT_POLICY_FILE = path.join(REPO_ROOT, "mesh", "policy.yaml");

export const VERSION = 1;
/** The shop's services, each one identity; the order is the one messages use. */
export const SERVICES = ["gateway", "catalog", "orders", "inventory", "payments", "notifications"] as const;
export type ServiceName = (typeof SERVICES)[number];
export const HEALTH_SERVICE = "grpc.health.v1.Health";
export const REFLECTION_SERVICES = [
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

/** A method name: what a `pkg.Service/*` grant allows after the slash. */
export const IDENT = "[A-Za-z_][A-Za-z0-9_]*";
const METHOD_NAME = new RegExp(`^${IDENT}$`);

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

export function isService(name: string): name is ServiceName {
  return (SERVICES as readonly string[]).includes(name);
}

export function checkService(name: string): ServiceName {
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

export function grantKey(service: string, caller: string): string {
  return `${service}\u0000${caller}`;
}
