// The mesh console in a real browser: Debian's Chromium, headless, driven by
// playwright-core. tests/console/test_browser.py starts the whole local stack,
// keeps checkouts coming through the gateway, and runs
//
//   node tests/console/browser.mjs <console-url> <checkout-trace-id> <screenshot.png>
//
// which checks what a user sees, through the data-* attributes the page keeps
// for this (services/console/web/src):
//   a. #nodes lists the six services, all SERVING, and #edges the edges of a
//      checkout with a non-zero rate; orders->payments' breaker is closed;
//   b. the checkout's row in #traces opens a waterfall whose rows hold spans
//      of gateway, orders, catalog, inventory and payments, each row's parent
//      an earlier row (or none); a click on a span shows its details;
//   c. payments broken from the #faults form (error ratio 1, UNAVAILABLE)
//      raises orders->payments' error ratio above 0 and moves its breaker off
//      "closed"; cleared from the form, the breaker closes again;
//   d. a full-page screenshot, the waterfall open and the fault in force.
// Every wait is bounded. It exits 1 naming the check that failed, 2 on bad
// arguments, 3 when the whole run overstays its time.

import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";

import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const SERVICES = ["gateway", "catalog", "orders", "inventory", "payments", "notifications"];
// The gRPC calls of a checkout and its event's hop over NATS to notifications.
const CHECKOUT_EDGES = ["gateway->orders", "orders->catalog", "orders->inventory", "orders->payments", "orders->notifications"];
// The synchronous part of a checkout; notifications' spans come later, by NATS.
const CHECKOUT_SERVICES = ["gateway", "orders", "catalog", "inventory", "payments"];
const FAULTY = "payments";
const FAULTY_EDGE = "orders->payments";
// The page polls the topology every 2 s and the traces every 5 s; a loaded
// CI machine may take much longer to export, index and scrape.
const WAIT_MS = 60_000;
const TOTAL_MS = 200_000; // below the pytest side's timeout, so this says why

class CheckFailed extends Error {}

const began = Date.now();
const log = (message) => console.log(`[${((Date.now() - began) / 1000).toFixed(1)}s] ${message}`);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// Calls probe() until it answers {ok: true, value}; at most timeoutMs. The
// failure names what was waited for and what was seen last.
async function until(what, probe, timeoutMs = WAIT_MS, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await probe();
    if (answer.ok) return answer.value;
    if (Date.now() + everyMs > deadline) {
      throw new CheckFailed(`${what}: not within ${timeoutMs / 1000} s; last seen: ${answer.seen}`);
    }
    await sleep(everyMs);
  }
}

// What #nodes and #edges say now.
function readTopology(page) {
  return page.evaluate(() => ({
    nodes: Object.fromEntries(
      [...document.querySelectorAll("#nodes li[data-node]")].map((li) => [li.dataset.node, li.dataset.health]),
    ),
    edges: Object.fromEntries(
      [...document.querySelectorAll("#edges tr[data-edge]")].map((tr) => [
        tr.dataset.edge,
        { rate: tr.dataset.rate, errorRatio: tr.dataset.errorRatio, breaker: tr.dataset.breaker },
      ]),
    ),
    status: document.querySelector("#status")?.textContent?.trim() ?? "",
  }));
}

// The waterfall's rows, in the page's order.
function readWaterfall(page) {
  return page.evaluate(() => ({
    title: document.querySelector("#waterfall-title")?.textContent ?? "",
    rows: [...document.querySelectorAll("#waterfall .span-row")].map((row) => ({
      spanId: row.dataset.spanId,
      parentId: row.dataset.parentId,
      service: row.dataset.service,
      depth: row.dataset.depth,
    })),
  }));
}

const positive = (text) => text !== undefined && text !== "" && Number(text) > 0;
const edgeText = (id, edge) => (edge ? `${id} rate=${edge.rate || "-"} err=${edge.errorRatio || "-"} breaker=${edge.breaker || "-"}` : `${id} missing`);

// a. All six services, and the checkout's edges with live rates.
async function checkTopology(page) {
  const nodes = await until("the six services SERVING in #nodes", async () => {
    const { nodes } = await readTopology(page);
    const missing = SERVICES.filter((name) => nodes[name] !== "SERVING");
    return { ok: missing.length === 0, value: nodes, seen: JSON.stringify(nodes) };
  });
  log(`a. #nodes: ${Object.entries(nodes).map(([id, health]) => `${id}=${health}`).join(" ")}`);

  const { edges, status } = await until("non-zero rates on the checkout's edges in #edges", async () => {
    const seen = await readTopology(page);
    const slow = CHECKOUT_EDGES.filter((id) => !positive(seen.edges[id]?.rate));
    return { ok: slow.length === 0, value: seen, seen: CHECKOUT_EDGES.map((id) => edgeText(id, seen.edges[id])).join("; ") };
  });
  for (const id of CHECKOUT_EDGES) log(`a. ${edgeText(id, edges[id])}`);
  log(`a. status bar: ${status}`);
  const before = edges[FAULTY_EDGE];
  if (before.breaker !== "closed") throw new CheckFailed(`before any fault ${edgeText(FAULTY_EDGE, before)}: the breaker should be closed`);
}

// b. The checkout's trace as a waterfall, parents first.
async function checkWaterfall(page, traceId) {
  const row = page.locator(`#traces tr[data-trace-id="${traceId}"]`);
  await until(`the checkout's trace ${traceId} in #traces`, async () => {
    const count = await row.count();
    const shown = await page.locator("#traces tr[data-trace-id]").count();
    return { ok: count > 0, value: true, seen: `${shown} traces listed` };
  });
  // Jaeger may hold part of the trace at first: open it again until it is whole.
  const rows = await until("a waterfall with spans of the five services of a checkout", async () => {
    await row.click({ timeout: 10_000 });
    const waterfall = await until(
      "the waterfall of the clicked trace",
      async () => {
        const seen = await readWaterfall(page);
        const loaded = seen.title.includes(traceId) && !seen.title.includes("loading") && seen.rows.length > 0;
        return { ok: loaded, value: seen, seen: `title "${seen.title}", ${seen.rows.length} rows` };
      },
      20_000,
    );
    const services = new Set(waterfall.rows.map((r) => r.service));
    const missing = CHECKOUT_SERVICES.filter((name) => !services.has(name));
    return { ok: missing.length === 0, value: waterfall.rows, seen: `services ${[...services].join(", ")}; missing ${missing.join(", ")}` };
  }, WAIT_MS, 2_000);

  const seen = new Set();
  rows.forEach((r, index) => {
    if (r.parentId !== "" && !seen.has(r.parentId)) {
      throw new CheckFailed(`waterfall row ${index} (${r.service}, span ${r.spanId}) has parent ${r.parentId}, which is not an earlier row`);
    }
    seen.add(r.spanId);
  });
  if (rows[0].service !== "gateway" || rows[0].parentId !== "" || rows[0].depth !== "0") {
    throw new CheckFailed(`the waterfall's first row should be the gateway's root span: ${JSON.stringify(rows[0])}`);
  }
  const perService = {};
  for (const r of rows) perService[r.service] = (perService[r.service] ?? 0) + 1;
  log(`b. waterfall of ${traceId}: ${rows.length} rows, parents first; spans per service ${JSON.stringify(perService)}`);

  const payments = rows.find((r) => r.service === FAULTY);
  await page.locator(`#waterfall .span-row[data-span-id="${payments.spanId}"]`).click();
  await until("the clicked span's details", async () => {
    const text = (await page.locator("#span-details").textContent()) ?? "";
    return { ok: text.includes(payments.spanId) && text.includes("attributes"), value: true, seen: text.slice(0, 200) };
  }, 10_000);
  log(`b. span ${payments.spanId} (${FAULTY}) clicked: its details show`);
}

async function faultShown(page, active) {
  const current = page.locator(`#faults .fault-current[data-service="${FAULTY}"]`);
  await until(`#faults showing ${FAULTY} ${active ? "with" : "without"} a fault`, async () => {
    const state = await current.getAttribute("data-active");
    return { ok: state === String(active), value: true, seen: `data-active=${state} "${await current.textContent()}"` };
  }, 20_000);
  return current.textContent();
}

// c. Break payments from the page: the edge's errors and breaker show it.
async function injectFault(page) {
  const form = page.locator(`#faults form[data-service="${FAULTY}"]`);
  await form.locator('[name="error_ratio"]').fill("1");
  await form.locator('[name="error_code"]').selectOption("UNAVAILABLE");
  await form.locator('[name="delay_ms"]').fill("0");
  await page.locator(`#faults button[data-action="inject"][data-service="${FAULTY}"]`).click();
  log(`c. injected from the page: ${await faultShown(page, true)}`);

  let errorSeen = null;
  let breakerSeen = null;
  await until(`${FAULTY_EDGE}'s error ratio above 0 and its breaker off "closed"`, async () => {
    const edge = (await readTopology(page)).edges[FAULTY_EDGE];
    const errorNow = !errorSeen && positive(edge?.errorRatio);
    const breakerNow = !breakerSeen && (edge?.breaker === "open" || edge?.breaker === "half-open");
    if (errorNow) errorSeen = edge;
    if (breakerNow) breakerSeen = edge;
    if (errorNow || breakerNow) log(`c. ${edgeText(FAULTY_EDGE, edge)}`);
    return { ok: Boolean(errorSeen && breakerSeen), value: true, seen: edgeText(FAULTY_EDGE, edge) };
  });
}

async function clearFault(page) {
  await page.locator(`#faults button[data-action="clear"][data-service="${FAULTY}"]`).click();
  log(`c. cleared from the page: ${await faultShown(page, false)}`);
  const edge = await until(`${FAULTY_EDGE}'s breaker closed again after the fault`, async () => {
    const edge = (await readTopology(page)).edges[FAULTY_EDGE];
    return { ok: edge?.breaker === "closed" && edge?.errorRatio === "0", value: edge, seen: edgeText(FAULTY_EDGE, edge) };
  });
  log(`c. ${edgeText(FAULTY_EDGE, edge)}`);
}

async function main() {
  const [url, traceId, screenshot] = process.argv.slice(2);
  if (!url || !/^[0-9a-f]{32}$/.test(traceId ?? "") || !screenshot) {
    console.error("usage: node tests/console/browser.mjs <console-url> <trace-id (32 hex)> <screenshot.png>");
    return 2;
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  const pageErrors = [];
  let faultOn = false;
  let page;
  try {
    log(`chromium ${browser.version()}, ${url}`);
    page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    page.on("pageerror", (error) => pageErrors.push(error.message));
    page.on("console", (message) => {
      if (message.type() === "error") log(`browser console: ${message.text()}`);
    });
    await page.goto(url, { waitUntil: "load", timeout: 30_000 });

    await checkTopology(page);
    await checkWaterfall(page, traceId);
    faultOn = true;
    await injectFault(page);

    const path = resolve(screenshot);
    await mkdir(dirname(path), { recursive: true });
    // From the top: the page's sticky header stays where it belongs.
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path, fullPage: true });
    log(`d. screenshot (waterfall open, ${FAULTY} broken): ${path}`);

    await clearFault(page);
    faultOn = false;
    if (pageErrors.length > 0) throw new CheckFailed(`uncaught errors in the page: ${pageErrors.join("; ")}`);
    console.log(`screenshot: ${path}`);
    return 0;
  } finally {
    // A failed check still clears the fault it set, as a user would.
    if (faultOn && page) {
      await page
        .locator(`#faults button[data-action="clear"][data-service="${FAULTY}"]`)
        .click({ timeout: 5_000 })
        .catch((error) => log(`could not clear the fault: ${error.message}`));
    }
    await browser.close();
  }
}

const overtime = setTimeout(() => {
  console.error(`FAILED: the browser test took more than ${TOTAL_MS / 1000} s`);
  process.exit(3);
}, TOTAL_MS);
overtime.unref();

try {
  process.exitCode = await main();
} catch (error) {
  console.error(`FAILED: ${error instanceof CheckFailed ? error.message : error?.stack ?? error}`);
  process.exitCode = 1;
}
