// Mutual TLS for the payments server: configuration, and credentials that
// reload the service's certificate without a restart. The same variables and
// behaviour as the Python services (mesh/tls.py):
//
// - MESH_MTLS (`MTLS_DEFAULT`, off for now): on/off, true/false, yes/no, 1/0.
// - MESH_CERTS_DIR (`<repo>/.run/certs`): `ca.pem`, `<service>.pem` and
//   `<service>.key`, written by `python -m mesh.certs` (`make certs`).
// - MESH_SERVICE_IDENTITY (`payments`): the service this process is, as a
//   name or its SPIFFE ID; it names the certificate files and the policy's
//   target.
// - MESH_POLICY_FILE: the authorization policy (policy-file.ts), read only
//   with mTLS on, as in Python: without peer identities there is nothing to
//   authorize.
//
// With mTLS on the server speaks TLS only (1.2 or 1.3; Node prefers 1.3),
// requires a client certificate and verifies it against ca.pem in the
// handshake: no certificate, another CA's or an expired one never reaches a
// handler (the client sees UNAVAILABLE).
//
// Loads @grpc/grpc-js only when credentials are made, so main.ts can read the
// configuration before telemetry installs its require hook.

import { X509Certificate, createPrivateKey } from "node:crypto";
import { existsSync, promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";

import type * as GrpcModule from "@grpc/grpc-js";

import { ConfigError } from "./config";
import { log, SERVICE_NAME, type Logger } from "./logging";
import { checkService, isService, type Policy, REPO_ROOT, SERVICES, type ServiceName } from "./policy";
import { loadPolicyFromEnv } from "./policy-file";
import { pyRepr } from "./pyyaml";

/** On unless MESH_MTLS=off, as in Python (mesh/tls.py) and Go; tests/contract/test_startup.py checks that all three agree. */
export const MTLS_DEFAULT = true;
export const DEFAULT_CERTS_DIR = path.join(REPO_ROOT, ".run", "certs");
export const CA_NAME = "ca";
const TRUST_DOMAIN_PREFIX = "spiffe://shop.local/";
// mesh.certs replaces a key, then its certificate: a reader between the two
// sees a pair that does not match and reads again, this often, this far apart.
const PAIR_ATTEMPTS = 5;
const PAIR_PAUSE_MS = 20;
/**
 * How often the files are also checked without a handshake asking (see
 * ReloadingServerCredentials): the bound on how long a client that sends no
 * TLS server name can still be shown a replaced certificate.
 */
export const BACKSTOP_CHECK_MS = 1000;

// mesh/config.py's `flag`: these words in any case.
const TRUE = new Set(["1", "true", "yes", "on"]);
const FALSE = new Set(["0", "false", "no", "off"]);

type Env = Readonly<Record<string, string | undefined>>;

/** Whether mTLS (and with it authorization) is on, and with what. */
export type MeshSecurity = {
  readonly certsDir: string;
  /** This process's service: its certificate files and the policy's target. */
  readonly service: ServiceName;
} & ({ readonly enabled: false; readonly policy: null } | { readonly enabled: true; readonly policy: Policy });

function optional(env: Env, name: string): string | undefined {
  const value = (env[name] ?? "").trim();
  return value === "" ? undefined : value;
}

function flag(env: Env, name: string, fallback: boolean): boolean {
  const raw = (optional(env, name) ?? String(fallback)).toLowerCase();
  if (TRUE.has(raw)) {
    return true;
  }
  if (FALSE.has(raw)) {
    return false;
  }
  throw new ConfigError(`${name} must be true or false, got ${pyRepr(raw)}`);
}

function serviceFromEnv(env: Env): ServiceName {
  const raw = optional(env, "MESH_SERVICE_IDENTITY");
  if (raw === undefined) {
    return SERVICE_NAME;
  }
  const name = raw.startsWith(TRUST_DOMAIN_PREFIX) ? raw.slice(TRUST_DOMAIN_PREFIX.length) : raw;
  if (!isService(name)) {
    throw new ConfigError(`MESH_SERVICE_IDENTITY must be one of ${SERVICES.join(", ")}, got ${pyRepr(raw)}`);
  }
  return name;
}

export function certPath(directory: string, name: string): string {
  return path.join(directory, `${name}.pem`);
}

export function keyPath(directory: string, name: string): string {
  return path.join(directory, `${name}.key`);
}

/** Reads the MESH_* variables; ConfigError names the first bad one (main.ts exits 2). */
export function loadMeshSecurity(env: Env = process.env): MeshSecurity {
  const enabled = flag(env, "MESH_MTLS", MTLS_DEFAULT);
  const certsDir = optional(env, "MESH_CERTS_DIR") ?? DEFAULT_CERTS_DIR;
  if (!enabled) {
    return { enabled: false, certsDir, service: SERVICE_NAME, policy: null };
  }
  const service = serviceFromEnv(env);
  for (const file of [certPath(certsDir, CA_NAME), certPath(certsDir, service), keyPath(certsDir, service)]) {
    if (!isFile(file)) {
      throw new ConfigError(
        `MESH_MTLS is on but ${file} is missing (MESH_CERTS_DIR=${certsDir}; \`make certs\` makes it)`,
      );
    }
  }
  return { enabled: true, certsDir, service, policy: loadPolicyFromEnv(env) };
}

function isFile(file: string): boolean {
  try {
    return existsSync(file) && statSync(file).isFile();
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function problem(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** What the server presents and trusts, and the same as a context for one handshake. */
interface Loaded {
  readonly options: SecureContextOptions;
  readonly context: SecureContext;
}

/**
 * Keeps the service's certificate, key and CA current. `check()` compares
 * the three files' inode, size and modification time with what it last
 * loaded and reloads only when one changed. A pair caught between its key and
 * its certificate being replaced is read again (PAIR_ATTEMPTS); if it still
 * does not match, or a file is unreadable, the credentials in use are kept
 * with a WARNING, and the same broken files are not read again until they
 * change. A check never throws: a rotation must not fail a handshake.
 */
export class CertificateReloader {
  /** Configurations loaded, the first included; for tests. */
  loads = 0;
  /** Called with each newly loaded configuration (not the first). */
  onChange: (options: SecureContextOptions) => void = () => undefined;
  private seen = "";
  private refused = "";
  private pending: Promise<void> | null = null;
  private current: Loaded | null = null;

  constructor(
    readonly directory: string,
    readonly service: string,
    private readonly logger: Logger = log,
  ) {
    checkService(service);
  }

  private files(): string[] {
    return [certPath(this.directory, CA_NAME), certPath(this.directory, this.service), keyPath(this.directory, this.service)];
  }

  private async stamp(): Promise<string> {
    const stats = await Promise.all(this.files().map((file) => fs.stat(file, { bigint: true })));
    return stats.map((s) => `${s.ino}:${s.size}:${s.mtimeNs}`).join(" ");
  }

  /** The first configuration; ConfigError when the files are unusable. */
  async initial(): Promise<SecureContextOptions> {
    try {
      const stamp = await this.stamp();
      this.current = await this.load();
      this.seen = stamp;
    } catch (error) {
      throw new ConfigError(`MESH_MTLS is on but the certificate is unusable: ${problem(error)}`);
    }
    return this.current.options;
  }

  /** The context for a handshake: the last configuration that loaded. */
  get context(): SecureContext {
    if (this.current === null) {
      throw new Error("CertificateReloader.initial() has not run");
    }
    return this.current.context;
  }

  /** Reloads if the files changed; concurrent handshakes share one check. */
  check(): Promise<void> {
    this.pending ??= this.refresh().finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  private async refresh(): Promise<void> {
    let stamp = "";
    try {
      // Taken before reading: a change made meanwhile is seen next time.
      stamp = await this.stamp();
      if (stamp === this.seen || stamp === this.refused) {
        return;
      }
      this.current = await this.load();
    } catch (error) {
      this.refused = stamp;
      this.logger.warning(`keeping the current certificate of ${this.service}: ${problem(error)}`, {
        service: this.service,
      });
      return;
    }
    this.seen = stamp;
    this.logger.info(`loaded a new certificate for ${this.service}`, { service: this.service });
    this.onChange(this.current.options);
  }

  private async load(): Promise<Loaded> {
    const [key, cert] = await this.readPair();
    const ca = await fs.readFile(certPath(this.directory, CA_NAME));
    const options: SecureContextOptions = { ca, cert, key };
    const context = createSecureContext({ ...options, minVersion: "TLSv1.2" });
    this.loads += 1;
    return { options, context };
  }

  /** (key PEM, certificate PEM), read until they belong together. */
  private async readPair(): Promise<[Buffer, Buffer]> {
    const keyFile = keyPath(this.directory, this.service);
    const certFile = certPath(this.directory, this.service);
    let reason = "";
    for (let attempt = 0; attempt < PAIR_ATTEMPTS; attempt += 1) {
      if (attempt > 0) {
        await sleep(PAIR_PAUSE_MS);
      }
      const key = await fs.readFile(keyFile);
      const cert = await fs.readFile(certFile);
      try {
        if (new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) {
          return [key, cert];
        }
        reason = `${keyFile} does not belong to ${certFile}`;
      } catch (error) {
        reason = problem(error); // half of a pair, or garbage
      }
    }
    throw new Error(reason);
  }
}

/**
 * Server credentials over a CertificateReloader, with the check run before
 * each new handshake.
 *
 * Why not grpc-js's own experimental.FileWatcherCertificateProvider with
 * createCertificateProviderServerCredentials: that provider re-reads the
 * files on a timer (refreshIntervalMs), so a connection opened after a
 * rotation but before the next tick still gets the old certificate; it does
 * not check that key and certificate belong together; and a failed read
 * sends `null`, after which grpc-js drops every new connection instead of
 * keeping the old credentials. Any CertificateProvider has the first
 * problem: the interface only pushes updates, it is never asked at a
 * handshake.
 *
 * The hook at a handshake is Node's SNICallback, which runs before the
 * server certificate is chosen: it checks the files and hands Node the
 * current context for this connection. Node calls it only when the client
 * sends a server name, which every mesh client does (it names the service it
 * calls: `grpc.ssl_target_name_override`, as the healthcheck, probe.ts,
 * does). A reload is also pushed to grpc-js
 * (`updateSecureContextOptions`, which calls the listening server's
 * setSecureContext), which is what a client sending no name gets; a check
 * every BACKSTOP_CHECK_MS while the server listens bounds how stale that is.
 * Connections already open keep the context they were made with.
 */
export function reloadingServerCredentials(
  reloader: CertificateReloader,
  initial: SecureContextOptions,
  backstopMs: number = BACKSTOP_CHECK_MS,
): GrpcModule.ServerCredentials {
  const grpc = require("@grpc/grpc-js") as typeof GrpcModule;
  type Watcher = Parameters<GrpcModule.ServerCredentials["_addWatcher"]>[0];

  class ReloadingServerCredentials extends grpc.ServerCredentials {
    private timer: NodeJS.Timeout | null = null;

    constructor() {
      super(
        {
          requestCert: true,
          rejectUnauthorized: true,
          minVersion: "TLSv1.2",
          SNICallback: (_servername, done) => {
            void reloader.check().then(() => done(null, reloader.context));
          },
        },
        initial,
      );
      reloader.onChange = (options) => this.updateSecureContextOptions(options);
    }

    override _addWatcher(watcher: Watcher): void {
      super._addWatcher(watcher);
      if (this.timer === null) {
        this.timer = setInterval(() => void reloader.check(), backstopMs);
        this.timer.unref();
      }
    }

    override _removeWatcher(watcher: Watcher): void {
      super._removeWatcher(watcher);
      if (this.getWatcherCount() === 0 && this.timer !== null) {
        clearInterval(this.timer);
        this.timer = null;
      }
    }

    override _equals(other: GrpcModule.ServerCredentials): boolean {
      return other === this;
    }
  }

  return new ReloadingServerCredentials();
}

/** The credentials to serve with: TLS with a required client certificate, reloaded on rotation. */
export async function serverCredentials(
  security: MeshSecurity,
  logger: Logger = log,
  backstopMs: number = BACKSTOP_CHECK_MS,
): Promise<{ credentials: GrpcModule.ServerCredentials; reloader: CertificateReloader }> {
  if (!security.enabled) {
    throw new Error("serverCredentials needs mTLS on");
  }
  const reloader = new CertificateReloader(security.certsDir, security.service, logger);
  const initial = await reloader.initial();
  return { credentials: reloadingServerCredentials(reloader, initial, backstopMs), reloader };
}
