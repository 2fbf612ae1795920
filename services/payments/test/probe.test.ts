// The healthcheck probe (src/probe.ts) as the image runs it: a child process
// with the server's environment, against a real server in this process on
// 127.0.0.1 and a port picked by the system. Exit status 0 when SERVING over
// mTLS as payments or over plaintext; 1 with one line when the server is
// another identity, speaks plaintext to an mTLS probe, or is NOT_SERVING; 2
// with "configuration error: ..." on a bad variable. And it never loads the
// OpenTelemetry SDK.

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import * as path from "node:path";
import { test } from "node:test";

import { configureLogging } from "../src/logging";
import { REPO_ROOT } from "../src/policy";
import { build, type PaymentsServer } from "../src/server";
import { tempDir, testConfig } from "../testing/helpers";
import { makeCerts, startSecure } from "../testing/mesh";

const PROBE = path.join(__dirname, "..", "src", "probe.js");
const LIMIT = { timeout: 60_000 };

type Context = { after(fn: () => void): void };

// The servers' start lines are not what these tests are about.
configureLogging("ERROR");

/**
 * Runs the probe with only `env` (and PATH), from the repository root as
 * compose runs it from /app. Asynchronous: the server in this process must
 * keep answering meanwhile.
 */
function runProbe(env: Record<string, string>): Promise<{ code: number | null; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PROBE], {
      cwd: REPO_ROOT,
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, lines: stderr.split("\n").filter((line) => line !== "") }));
  });
}

async function startPlaintext(t: Context): Promise<PaymentsServer> {
  const payments = await build(testConfig(tempDir(t)));
  t.after(() => {
    payments.server.forceShutdown();
    payments.store.close();
  });
  return payments;
}

test("mTLS on: the probe calls as payments and exits 0", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startSecure(t, certs);
  const result = await runProbe({ MESH_MTLS: "on", MESH_CERTS_DIR: certs.dir, GRPC_LISTEN_ADDR: `0.0.0.0:${server.port}` });
  assert.deepEqual(result, { code: 0, lines: [] });
});

test("mTLS on: a probe expecting another identity exits 1 with one line", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startSecure(t, certs);
  // Orders' own certificate is valid (health is open to it): what fails is
  // the server's certificate, which does not name orders.
  const result = await runProbe({
    MESH_MTLS: "on",
    MESH_CERTS_DIR: certs.dir,
    MESH_SERVICE_IDENTITY: "spiffe://shop.local/orders",
    GRPC_LISTEN_ADDR: `0.0.0.0:${server.port}`,
  });
  assert.equal(result.code, 1, result.lines.join("\n"));
  assert.equal(result.lines.length, 1, result.lines.join("\n"));
  assert.match(result.lines[0] ?? "", new RegExp(`^127\\.0\\.0\\.1:${server.port} is not healthy: .*UNAVAILABLE.*orders`));
});

test("mTLS off on both sides: the probe calls in plaintext and exits 0", LIMIT, async (t) => {
  const server = await startPlaintext(t);
  const result = await runProbe({ MESH_MTLS: "off", GRPC_LISTEN_ADDR: `0.0.0.0:${server.port}` });
  assert.deepEqual(result, { code: 0, lines: [] });
});

test("an mTLS probe against a plaintext server exits 1 with one line", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startPlaintext(t);
  const result = await runProbe({ MESH_MTLS: "on", MESH_CERTS_DIR: certs.dir, GRPC_LISTEN_ADDR: `0.0.0.0:${server.port}` });
  assert.equal(result.code, 1, result.lines.join("\n"));
  assert.equal(result.lines.length, 1, result.lines.join("\n"));
  assert.match(result.lines[0] ?? "", /is not healthy: .*UNAVAILABLE/);
});

test("a server reporting NOT_SERVING fails the probe with exit 1", LIMIT, async (t) => {
  const server = await startPlaintext(t);
  server.health.setStatus("", "NOT_SERVING");
  const result = await runProbe({ MESH_MTLS: "off", GRPC_LISTEN_ADDR: `127.0.0.1:${server.port}` });
  assert.deepEqual(result, { code: 1, lines: [`127.0.0.1:${server.port} is not healthy: it reports NOT_SERVING`] });
});

test("a configuration error exits 2 with one line naming the variable", LIMIT, async (t) => {
  const cases: [Record<string, string>, string][] = [
    [{ MESH_MTLS: "maybe", GRPC_LISTEN_ADDR: "127.0.0.1:1" }, "MESH_MTLS must be true or false, got 'maybe'"],
    [{ MESH_MTLS: "off", GRPC_LISTEN_ADDR: "127.0.0.1:0" }, "GRPC_LISTEN_ADDR has port 0"],
    [{ MESH_MTLS: "on", MESH_CERTS_DIR: tempDir(t), GRPC_LISTEN_ADDR: "127.0.0.1:1" }, "MESH_CERTS_DIR="],
  ];
  for (const [env, expected] of cases) {
    const result = await runProbe(env);
    assert.equal(result.code, 2, JSON.stringify(env));
    assert.equal(result.lines.length, 1, result.lines.join("\n"));
    assert.ok(result.lines[0]?.startsWith("configuration error: "), result.lines[0]);
    assert.ok(result.lines[0]?.includes(expected), result.lines[0]);
  }
});

test("the probe loads no telemetry: only @opentelemetry/api, through the logger", LIMIT, async () => {
  const script = `require(${JSON.stringify(PROBE)}); process.stdout.write(JSON.stringify(Object.keys(require.cache)))`;
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ["-e", script], { cwd: REPO_ROOT }, (error, out) => (error ? reject(error) : resolve(out))),
  );
  const loaded = (JSON.parse(stdout) as string[]).filter(
    (file) => /[\\/]telemetry\.js$/.test(file) || (file.includes("@opentelemetry") && !file.includes("@opentelemetry/api")),
  );
  assert.deepEqual(loaded, []);
});
