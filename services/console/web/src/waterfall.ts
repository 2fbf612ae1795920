// One trace as a waterfall (id="waterfall"): a row per span in the order the
// API gives (parent before children), indented by depth, its bar placed on
// the trace's time axis and coloured by service, outlined red on ERROR. A
// click on a row shows the span's status, attributes and events in the
// details panel; a link opens the trace in Jaeger's own UI when one runs.

import { getTrace, type AttributeValue, type SpanRow, type TraceDetail } from "./api";
import { h, swatch } from "./dom";
import { axisTicks, barGeometry, formatDuration, jaegerTraceUrl, serviceColour } from "./format";
import type { StatusBar } from "./status";

const INDENT_PX = 14;

export interface WaterfallElements {
  title: HTMLElement;
  axis: HTMLElement;
  rows: HTMLElement;
  details: HTMLElement;
}

export class WaterfallView {
  private requested = 0;
  private spans = new Map<string, SpanRow>();

  constructor(
    private readonly elements: WaterfallElements,
    private readonly status: StatusBar,
  ) {
    elements.rows.addEventListener("click", (event) => this.showFrom(event.target));
    elements.rows.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.showFrom(event.target);
      }
    });
  }

  async open(traceId: string, jaegerUi: string | null): Promise<void> {
    const request = ++this.requested;
    this.elements.title.replaceChildren(`trace ${traceId} · loading…`);
    let trace: TraceDetail;
    try {
      trace = await getTrace(traceId);
    } catch (error) {
      if (request !== this.requested) return;
      this.status.fail("trace", error);
      this.elements.title.replaceChildren(`trace ${traceId} could not be loaded`);
      this.clear();
      return;
    }
    // A later click won the race: its trace is the one to show.
    if (request !== this.requested) return;
    this.status.report("trace", trace.error ? [`trace ${traceId}: ${trace.error}`] : []);
    this.render(trace, jaegerUi);
  }

  private clear(): void {
    this.spans.clear();
    this.elements.axis.replaceChildren();
    this.elements.rows.replaceChildren();
    this.elements.details.replaceChildren(h("p", { class: "hint" }, "no span selected"));
  }

  private render(trace: TraceDetail, jaegerUi: string | null): void {
    const services = new Set(trace.rows.map((row) => row.service));
    const link = jaegerTraceUrl(jaegerUi, trace.trace_id);
    this.elements.title.replaceChildren(
      h("span", { class: "trace-id" }, `trace ${trace.trace_id}`),
      ` · ${formatDuration(trace.duration_ms)} · ${trace.rows.length} spans · ${services.size} services`,
    );
    if (link) this.elements.title.append(h("a", { id: "jaeger-link", href: link, target: "_blank", rel: "noopener noreferrer" }, "open in Jaeger"));
    this.elements.axis.replaceChildren(
      h("div", { class: "axis-label" }, "span"),
      h(
        "div",
        { class: "axis-track" },
        ...axisTicks(trace.duration_ms).map((tick) => {
          const mark = h("span", { class: "tick" }, tick.label);
          mark.style.left = `${tick.percent}%`;
          return mark;
        }),
      ),
      h("div", { class: "axis-duration" }, "duration"),
    );
    this.spans = new Map(trace.rows.map((row) => [row.span_id, row]));
    this.elements.rows.replaceChildren(...trace.rows.map((row) => this.row(row, trace.duration_ms)));
    this.elements.details.replaceChildren(h("p", { class: "hint" }, "click a span for its attributes and events"));
  }

  private row(span: SpanRow, traceMs: number): HTMLElement {
    const colour = serviceColour(span.service);
    const failed = span.status === "ERROR";
    const label = h(
      "div",
      { class: "span-label", title: `${span.service} ${span.name}` },
      swatch(colour, "chip-colour"),
      h("span", { class: "span-service" }, span.service),
      h("span", { class: "span-name" }, span.name),
    );
    label.style.paddingLeft = `${Math.max(span.depth, 0) * INDENT_PX + 4}px`;
    const geometry = barGeometry(span.start_ms, span.duration_ms, traceMs);
    const bar = h("div", { class: "span-bar" });
    bar.style.left = `${geometry.leftPercent}%`;
    bar.style.width = `${geometry.widthPercent}%`;
    bar.style.backgroundColor = colour;
    return h(
      "div",
      {
        class: failed ? "span-row error" : "span-row",
        "data-span-id": span.span_id,
        "data-parent-id": span.parent_id ?? "",
        "data-service": span.service,
        "data-depth": String(span.depth),
        "data-status": span.status,
        tabindex: "0",
      },
      label,
      h("div", { class: "span-track" }, bar),
      h("div", { class: "span-duration" }, formatDuration(span.duration_ms)),
    );
  }

  private showFrom(target: EventTarget | null): void {
    const row = target instanceof Element ? target.closest<HTMLElement>(".span-row") : null;
    const span = row?.dataset.spanId ? this.spans.get(row.dataset.spanId) : undefined;
    if (!row || !span) return;
    for (const other of this.elements.rows.querySelectorAll(".span-row.selected")) other.classList.remove("selected");
    row.classList.add("selected");
    this.elements.details.replaceChildren(...details(span));
  }
}

function valueText(value: AttributeValue): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function attributeTable(attributes: Record<string, AttributeValue>): HTMLElement {
  const keys = Object.keys(attributes ?? {}).sort();
  if (keys.length === 0) return h("p", { class: "hint" }, "none");
  return h(
    "table",
    { class: "attributes" },
    h("tbody", {}, ...keys.map((key) => h("tr", {}, h("th", {}, key), h("td", {}, valueText(attributes[key] ?? null))))),
  );
}

function details(span: SpanRow): HTMLElement[] {
  const status = span.status_message ? `${span.status}: ${span.status_message}` : span.status;
  const facts: [string, string][] = [
    ["service", span.service],
    ["kind", span.kind],
    ["status", status],
    ["start", `+${formatDuration(span.start_ms)}`],
    ["duration", formatDuration(span.duration_ms)],
    ["span id", span.span_id],
    ["parent", span.parent_id ?? "(root)"],
  ];
  const events = (span.events ?? []).map((event) =>
    h("li", {}, h("span", { class: "event-time" }, `+${formatDuration(event.time_ms)}`), " ", h("strong", {}, event.name), attributeTable(event.attributes)),
  );
  return [
    h("h3", { class: span.status === "ERROR" ? "bad" : undefined }, span.name),
    h("dl", {}, ...facts.flatMap(([term, value]) => [h("dt", {}, term), h("dd", { class: term === "status" && span.status === "ERROR" ? "bad" : undefined }, value)])),
    h("h4", {}, "attributes"),
    attributeTable(span.attributes),
    h("h4", {}, `events (${events.length})`),
    events.length > 0 ? h("ul", { class: "events" }, ...events) : h("p", { class: "hint" }, "none"),
  ];
}
