// Which fault to inject into a call, from the fault file (MESH_FAULTS_FILE,
// fault-file.ts) as it is now, or else from FAULT_DELAY_MS and
// FAULT_ERROR_PERCENT as set at start. service.ts applies the rule.
//
// For a call to method M: the file's rule for M, else its "*" rule, else the
// environment's (error code UNAVAILABLE), else none. Health and reflection
// are never faulted.
//
// The file is switched at run time, without a restart: a call finds whether
// it changed (its inode, size and modification time) at most once per
// `checkEveryMs`, lazily, so an idle server does no work and needs no timer
// to stop. A new good file replaces the rules at once (one INFO line); a
// missing one means no file rules (one INFO line when it goes); a bad one is
// one WARNING naming the file and the problem, and the rules before it stay,
// at start too: the file is run-time state, and a half-written file must
// neither stop the service nor fail its calls. Write it elsewhere and rename
// it into place, and a reader never sees it half-written.

import { statSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { status } from "@grpc/grpc-js";

import { type FaultConfig, faultsEnabled } from "./config";
import { ANY_METHOD, type FaultRule, type FaultRules, loadFaultRules } from "./fault-file";
import { log, type Logger } from "./logging";
import { HEALTH_SERVICE } from "./policy";

export type { FaultRule };

/** How often the fault file is looked at, at most (the specification's once a second). */
export const FAULTS_CHECK_MS = 1000;
const NEVER_FAULTED = [`/${HEALTH_SERVICE}/`, "/grpc.reflection."];

/** What service.ts asks for each call. */
export interface FaultSource {
  /** The rule for a call to `path` (`/pkg.Service/Method`), or null for none. */
  ruleFor(path: string): FaultRule | null;
}

export interface FaultsOptions {
  /** FAULT_DELAY_MS and FAULT_ERROR_PERCENT: the rule when the file has none. */
  readonly env: FaultConfig;
  /** MESH_FAULTS_FILE; null for none. */
  readonly file: string | null;
  /** The service whose entry of the file applies (the mesh identity). */
  readonly service: string;
  /** Its methods' short names, the only ones a rule may name. */
  readonly methods: readonly string[];
  readonly logger?: Logger;
  /** Milliseconds on any monotonic clock; tests step their own. */
  readonly now?: () => number;
  readonly checkEveryMs?: number;
}

/** The environment's rule as a file rule: every method, UNAVAILABLE. */
export function envRule(faults: FaultConfig): FaultRule | null {
  if (!faultsEnabled(faults)) {
    return null;
  }
  return { delayMs: faults.delayMs, errorRatio: faults.errorPercent / 100, errorCode: status.UNAVAILABLE };
}

/** A rule as the file writes it, for the log. */
export function describe(rule: FaultRule): Record<string, number | string> {
  return { delay_ms: rule.delayMs, error_ratio: rule.errorRatio, error_code: status[rule.errorCode] };
}

/** The short method name of `/pkg.Service/Method`. */
function methodName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The fault rules in force, the file's re-read when it changes. */
export class Faults implements FaultSource {
  private readonly envRule: FaultRule | null;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly checkEveryMs: number;
  private fileRules: FaultRules = new Map();
  /** What the file looked like when last read: undefined before, null when missing. */
  private stamp: string | null | undefined = undefined;
  private checkedAt = -Infinity;

  constructor(private readonly options: FaultsOptions) {
    this.envRule = envRule(options.env);
    this.logger = options.logger ?? log;
    this.now = options.now ?? (() => performance.now());
    this.checkEveryMs = options.checkEveryMs ?? FAULTS_CHECK_MS;
    this.refresh();
  }

  /** This service's rules from the file as last read (empty without one). */
  get rules(): FaultRules {
    return this.fileRules;
  }

  ruleFor(path: string): FaultRule | null {
    if (NEVER_FAULTED.some((prefix) => path.startsWith(prefix))) {
      return null;
    }
    if (this.now() - this.checkedAt >= this.checkEveryMs) {
      this.refresh();
    }
    return this.fileRules.get(methodName(path)) ?? this.fileRules.get(ANY_METHOD) ?? this.envRule;
  }

  private keep(problem: string): void {
    const file = this.options.file;
    this.logger.warning(
      `fault file ${file} not applied, keeping the ${this.fileRules.size} rule(s) in force: ${problem}`,
      { file },
    );
  }

  /** Looks at the file now, and reads it if it changed. Never throws. */
  refresh(): void {
    this.checkedAt = this.now();
    const file = this.options.file;
    if (file === null) {
      return;
    }
    let stamp: string | null;
    try {
      const stat = statSync(file, { bigint: true });
      stamp = `${stat.ino}:${stat.size}:${stat.mtimeNs}`;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === "ENOENT" || code === "ENOTDIR") {
        stamp = null;
      } else {
        // Said once per kind of failure, not once a second.
        const failure = `error:${String(code)}`;
        if (this.stamp !== failure) {
          this.stamp = failure;
          this.keep(`cannot stat: ${error instanceof Error ? error.message : String(error)}`);
        }
        return;
      }
    }
    if (stamp === this.stamp) {
      return;
    }
    if (stamp === null) {
      const first = this.stamp === undefined;
      this.stamp = null;
      this.fileRules = new Map();
      // The words of mesh/faults.py.
      const state = first ? "does not exist (yet)" : "is gone";
      this.logger.info(`fault file ${file} ${state}: no fault rules from it`);
      return;
    }
    // Recorded even when the file is bad: a bad file is reported once, not
    // every second, and read again when it changes.
    this.stamp = stamp;
    try {
      this.fileRules = loadFaultRules(file, this.options.service, this.options.methods);
    } catch (error) {
      this.keep(error instanceof Error ? error.message : String(error));
      return;
    }
    this.logger.info(`fault rules from ${file}: ${this.fileRules.size} for ${this.options.service}`, {
      file,
      rules: Object.fromEntries([...this.fileRules].map(([method, rule]) => [method, describe(rule)])),
    });
  }
}
