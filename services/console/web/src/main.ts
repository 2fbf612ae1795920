// Wiring only: find the page's elements, make the views, and poll the API
// (topology every 2 s, traces and faults every 5 s). Every failure ends in
// the status bar; nothing stops a poller.

import { getFaults, getTopology, getTraces } from "./api";
import { byId } from "./dom";
import { FaultsView } from "./faults";
import { poll } from "./poll";
import { StatusBar } from "./status";
import { TopologyView } from "./topology";
import { TracesView } from "./traces";
import { WaterfallView } from "./waterfall";

const TOPOLOGY_MS = 2_000;
const TRACES_MS = 5_000;
const FAULTS_MS = 5_000;

function start(): void {
  const status = new StatusBar(byId("status", HTMLElement));
  // The last net: a bug in a view must show, not silently stop the page.
  window.addEventListener("error", (event) => status.report("page", [`page error: ${event.message}`]));
  window.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    status.fail("page", event.reason);
  });

  const topology = new TopologyView({
    graph: byId("graph", HTMLElement),
    edges: byId("edges-body", HTMLTableSectionElement),
    nodes: byId("nodes", HTMLElement),
    meta: byId("topology-meta", HTMLElement),
  });
  byId("fit-graph", HTMLButtonElement).addEventListener("click", () => topology.fit());

  const waterfall = new WaterfallView(
    {
      title: byId("waterfall-title", HTMLElement),
      axis: byId("waterfall-axis", HTMLElement),
      rows: byId("waterfall-rows", HTMLElement),
      details: byId("span-details", HTMLElement),
    },
    status,
  );

  const traces: TracesView = new TracesView(
    {
      service: byId("trace-service", HTMLSelectElement),
      status: byId("trace-status", HTMLSelectElement),
      body: byId("traces-body", HTMLTableSectionElement),
    },
    (traceId) => void waterfall.open(traceId, traces.jaegerUi()),
    () => tracesPoller.now(),
  );

  const faults = new FaultsView(byId("faults", HTMLElement), status);

  poll(
    async () => {
      const answer = await getTopology();
      topology.render(answer);
      traces.setServices(topology.services());
      status.report("topology", Array.isArray(answer.errors) ? answer.errors.map(String) : []);
    },
    TOPOLOGY_MS,
    (error) => status.fail("topology", error),
  );

  const tracesPoller = poll(
    async () => {
      const filters = traces.filters();
      const answer = await getTraces(filters);
      // The filters changed while this was asked: the next run asks again.
      if (JSON.stringify(filters) !== JSON.stringify(traces.filters())) return;
      traces.render(answer);
      status.report("traces", answer.error ? [`traces: ${answer.error}`] : []);
    },
    TRACES_MS,
    (error) => status.fail("traces", error),
  );

  poll(
    async () => {
      faults.render(await getFaults());
      status.report("faults", []);
    },
    FAULTS_MS,
    (error) => status.fail("faults", error),
  );
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
