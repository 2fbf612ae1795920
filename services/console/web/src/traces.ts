// Recent traces: the filters (service, status) and the table (id="traces")
// with one <tr data-trace-id> per trace; a click on a row, or Enter on it,
// asks for its waterfall.

import type { TraceFilters, TraceList, TraceStatusFilter, TraceSummary } from "./api";
import { h, swatch } from "./dom";
import { clockTime, formatDuration, serviceColour } from "./format";

const LIMIT = 20;

export interface TracesElements {
  service: HTMLSelectElement;
  status: HTMLSelectElement;
  body: HTMLTableSectionElement;
}

export class TracesView {
  private jaeger: string | null = null;
  private selected: string | null = null;
  private serviceKey = "";

  constructor(
    private readonly elements: TracesElements,
    private readonly onOpen: (traceId: string) => void,
    onFilter: () => void,
  ) {
    elements.service.addEventListener("change", onFilter);
    elements.status.addEventListener("change", onFilter);
    elements.body.addEventListener("click", (event) => this.openFrom(event.target));
    elements.body.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.openFrom(event.target);
      }
    });
  }

  // Jaeger's own UI as the last answer named it (null when none runs).
  jaegerUi(): string | null {
    return this.jaeger;
  }

  filters(): TraceFilters {
    const status = this.elements.status.value;
    return {
      service: this.elements.service.value,
      status: status === "ok" || status === "error" ? (status satisfies TraceStatusFilter) : "",
      limit: LIMIT,
    };
  }

  // Fills the service filter from the topology's services, keeping the
  // current choice (even one that has left the topology, until changed).
  setServices(services: readonly string[]): void {
    const current = this.elements.service.value;
    const names = [...new Set(services)].sort();
    if (current && !names.includes(current)) names.push(current);
    const key = names.join("\n");
    if (key === this.serviceKey) return;
    this.serviceKey = key;
    this.elements.service.replaceChildren(
      h("option", { value: "" }, "all services"),
      ...names.map((name) => h("option", { value: name }, name)),
    );
    this.elements.service.value = current;
  }

  render(list: TraceList): void {
    this.jaeger = list.jaeger_ui;
    const rows = list.traces.map((trace) => this.row(trace));
    if (rows.length === 0) {
      const why = list.error ? "no traces: Jaeger could not be read" : "no traces match yet";
      rows.push(h("tr", { class: "empty" }, h("td", { colspan: "6" }, why)));
    }
    this.elements.body.replaceChildren(...rows);
  }

  select(traceId: string): void {
    this.selected = traceId;
    for (const row of this.elements.body.querySelectorAll<HTMLTableRowElement>("tr[data-trace-id]")) {
      row.classList.toggle("selected", row.dataset.traceId === traceId);
    }
  }

  private row(trace: TraceSummary): HTMLTableRowElement {
    const services = h("td", { class: "services" });
    for (const service of trace.services ?? []) {
      services.append(h("span", { class: "chip" }, swatch(serviceColour(service), "chip-colour"), service));
    }
    const row = h(
      "tr",
      {
        "data-trace-id": trace.trace_id,
        "data-error": String(trace.error === true),
        tabindex: "0",
        class: [trace.error ? "error" : "", trace.trace_id === this.selected ? "selected" : ""].join(" ").trim() || undefined,
        title: `trace ${trace.trace_id}`,
      },
      h("td", { class: "time" }, clockTime(trace.start)),
      h("td", { class: "root" }, h("span", { class: "root-service" }, trace.root_service), " ", h("span", { class: "root-name" }, trace.root_name)),
      services,
      h("td", { class: "num" }, formatDuration(trace.duration_ms)),
      h("td", { class: "num" }, String(trace.span_count)),
      h("td", { class: "mark" }, trace.error ? h("span", { class: "badge bad", title: "a span failed" }, "✗ error") : h("span", { class: "ok" }, "✓")),
    );
    return row;
  }

  private openFrom(target: EventTarget | null): void {
    const row = target instanceof Element ? target.closest<HTMLTableRowElement>("tr[data-trace-id]") : null;
    const traceId = row?.dataset.traceId;
    if (!traceId) return;
    this.select(traceId);
    this.onOpen(traceId);
  }
}
