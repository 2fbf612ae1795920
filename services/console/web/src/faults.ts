// Faults (id="faults"): per service a small form, error ratio, status code
// and delay, whose "inject" button PUTs /api/faults/<service> and whose
// "clear" button DELETEs it; beside each, the faults now in force. The forms
// are built again only when the services or the codes change, so a poll never
// overwrites what the user is typing.

import { clearFaults, putFault, type Fault, type FaultState } from "./api";
import { h } from "./dom";
import { faultSummary, parseFaultForm } from "./format";
import type { StatusBar } from "./status";

// Problems of the user's own clicks, apart from the poll's.
const ACTION = "faults (action)";
// What a callee that is down answers, and what opens a breaker.
const DEFAULT_CODE = "UNAVAILABLE";

export class FaultsView {
  private formKey = "";

  constructor(
    private readonly root: HTMLElement,
    private readonly status: StatusBar,
  ) {
    root.addEventListener("click", (event) => {
      const button = event.target instanceof Element ? event.target.closest<HTMLButtonElement>("button[data-action]") : null;
      if (button) void this.act(button.dataset.action ?? "", button.dataset.service ?? "");
    });
    root.addEventListener("submit", (event) => {
      event.preventDefault();
      const form = event.target instanceof HTMLFormElement ? event.target : null;
      if (form?.dataset.service) void this.act("inject", form.dataset.service);
    });
  }

  render(state: FaultState): void {
    const services = [...new Set([...state.services, ...state.faults.map((fault) => fault.service)])];
    const key = JSON.stringify([services, state.codes]);
    if (key !== this.formKey) {
      this.formKey = key;
      this.root.replaceChildren(...services.map((service) => this.form(service, state)));
    }
    for (const service of services) {
      const current = this.root.querySelector<HTMLElement>(`.fault-current[data-service="${CSS.escape(service)}"]`);
      if (current) showCurrent(current, state.faults.filter((fault) => fault.service === service));
    }
  }

  private form(service: string, state: FaultState): HTMLFormElement {
    const fault = state.faults.find((candidate) => candidate.service === service && candidate.method === "*");
    // Prefilled to break the service outright: one click shows the breaker open.
    const ratio = fault ? String(fault.error_ratio) : "1";
    const delay = fault ? String(fault.delay_ms) : "0";
    const code = fault?.error_code ?? (state.codes.includes(DEFAULT_CODE) ? DEFAULT_CODE : state.codes[0]) ?? "";
    const codes = state.codes.includes(code) || code === "" ? state.codes : [code, ...state.codes];
    const id = (field: string): string => `fault-${service}-${field}`;
    return h(
      "form",
      { class: "fault-form", "data-service": service, "aria-label": `faults of ${service}` },
      h("span", { class: "fault-service" }, service),
      h("label", { for: id("ratio") }, "error ratio"),
      h("input", { id: id("ratio"), name: "error_ratio", type: "number", min: "0", max: "1", step: "0.05", value: ratio, "data-service": service }),
      h("label", { for: id("code") }, "code"),
      h(
        "select",
        { id: id("code"), name: "error_code", "data-service": service },
        ...codes.map((name) => h("option", name === code ? { value: name, selected: "" } : { value: name }, name)),
      ),
      h("label", { for: id("delay") }, "delay ms"),
      h("input", { id: id("delay"), name: "delay_ms", type: "number", min: "0", step: "50", value: delay, "data-service": service }),
      h("button", { type: "button", "data-action": "inject", "data-service": service }, "inject"),
      h("button", { type: "button", "data-action": "clear", "data-service": service, class: "secondary" }, "clear"),
      h("span", { class: "fault-current", "data-service": service, "aria-live": "polite" }),
    );
  }

  private async act(action: string, service: string): Promise<void> {
    const form = this.root.querySelector<HTMLFormElement>(`form[data-service="${CSS.escape(service)}"]`);
    if (!form || (action !== "inject" && action !== "clear")) return;
    const field = (name: string): string => (form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement | null)?.value ?? "";
    let request: () => Promise<FaultState>;
    if (action === "inject") {
      const parsed = parseFaultForm({ errorRatio: field("error_ratio"), code: field("error_code"), delayMs: field("delay_ms") });
      if (!parsed.ok) {
        this.status.report(ACTION, [`${service}: ${parsed.error}`]);
        return;
      }
      request = () => putFault(service, parsed.fault);
    } else {
      request = () => clearFaults(service);
    }
    const buttons = [...form.querySelectorAll("button")];
    for (const button of buttons) button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      this.render(await request());
      this.status.report(ACTION, []);
    } catch (error) {
      this.status.fail(ACTION, error);
    } finally {
      for (const button of buttons) button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  }
}

function showCurrent(element: HTMLElement, faults: readonly Fault[]): void {
  element.dataset.active = String(faults.length > 0);
  element.classList.toggle("bad", faults.length > 0);
  element.textContent = faults.length > 0 ? faults.map(faultSummary).join("; ") : "no fault";
}
