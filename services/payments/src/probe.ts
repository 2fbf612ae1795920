// The image's healthcheck, so the image needs no grpc_health_probe binary:
//
//   node services/payments/dist/services/payments/src/probe.js
//
// Like `python -m mesh.probe` and `/inventory probe`, it runs beside the
// server with the server's environment (config.ts, tls.ts) and calls
// grpc.health.v1.Health/Check (service "") on 127.0.0.1 at GRPC_LISTEN_ADDR's
// port: over mTLS as the service itself (MESH_SERVICE_IDENTITY's certificate),
// expecting the server to be that service, when MESH_MTLS is on (health is
// open to every identity); plaintext when it is off.
//
// Exit status 0 is SERVING; 1 anything else (down, refused, NOT_SERVING, a
// server of another identity, the deadline); 2 a configuration error. Each
// failure prints one line on stderr. Telemetry is never started: a probe
// every few seconds must not export spans or open a collector connection.

import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

import { ConfigError, loadConfig } from "./config";
import { CertificateReloader, loadMeshSecurity } from "./tls";

/** Bounds the whole check, as mesh/probe.py's timeout_s does. */
export const PROBE_TIMEOUT_MS = 2000;

type Env = Readonly<Record<string, string | undefined>>;

// grpc-health-check's own definition of the method the server implements
// (proto-loader, enums as names): no generated stub needed.
const CHECK = healthService["Check"]!;

/** The channel's credentials and options: mTLS as this service, or plaintext. */
async function channel(env: Env): Promise<[grpc.ChannelCredentials, grpc.ChannelOptions]> {
  const security = loadMeshSecurity(env);
  if (!security.enabled) {
    return [grpc.credentials.createInsecure(), {}];
  }
  // The reloader's first read: the same pair check (a half-rotated pair is
  // read again) and the same ConfigError as the server's start.
  const reloader = new CertificateReloader(security.certsDir, security.service);
  await reloader.initial();
  // The server's certificate names its service (DNS SAN), which is also the
  // TLS server name sent; any other service's certificate fails the check.
  return [
    grpc.credentials.createFromSecureContext(reloader.context),
    { "grpc.ssl_target_name_override": security.service },
  ];
}

/** Probes the server this environment configures; returns the exit status, writing one line on failure. */
export async function probe(env: Env, writeLine: (line: string) => void): Promise<number> {
  let target: string;
  let credentials: grpc.ChannelCredentials;
  let options: grpc.ChannelOptions;
  try {
    const listenAddr = loadConfig(env).server.listenAddr; // checked: host:port, port 0-65535
    const port = Number(listenAddr.slice(listenAddr.lastIndexOf(":") + 1));
    if (port === 0) {
      // "Any free port": another process cannot know which one.
      throw new ConfigError(`GRPC_LISTEN_ADDR has port 0: nothing to probe, got '${listenAddr}'`);
    }
    target = `127.0.0.1:${port}`;
    [credentials, options] = await channel(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      writeLine(`configuration error: ${error.message}`);
      return 2;
    }
    throw error;
  }

  const client = new grpc.Client(target, credentials, options);
  try {
    const reply = await new Promise<{ status?: string }>((resolve, reject) =>
      client.makeUnaryRequest(
        CHECK.path,
        CHECK.requestSerialize,
        (bytes: Buffer) => CHECK.responseDeserialize(bytes) as { status?: string },
        { service: "" },
        { deadline: Date.now() + PROBE_TIMEOUT_MS },
        (error, response) => (error ? reject(error) : resolve(response ?? {})),
      ),
    );
    if (reply.status !== "SERVING") {
      writeLine(`${target} is not healthy: it reports ${reply.status ?? "UNKNOWN"}`);
      return 1;
    }
    return 0;
  } catch (error) {
    // One line, whatever the error's text holds.
    const text = error instanceof Error ? error.message : String(error);
    writeLine(`${target} is not healthy: ${text.replace(/\s+/g, " ").trim()}`);
    return 1;
  } finally {
    client.close();
  }
}

if (require.main === module) {
  // grpc-js's own console diagnostics would break the one-line contract.
  grpc.setLogVerbosity(grpc.logVerbosity.NONE);
  probe(process.env, (line) => process.stderr.write(`${line}\n`)).then(
    (status) => process.exit(status),
    (error: unknown) => {
      process.stderr.write(`probe failed: ${String(error).replace(/\s*\n\s*/g, " ")}\n`);
      process.exit(1);
    },
  );
}
