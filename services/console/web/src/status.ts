// The status bar (id="status"): every part of the page reports its current
// problems under its own name, and a report without any clears that part's.
// The bar lists what is wrong now, or says all is well and when the page last
// heard from the console; data-state is "ok" or "error" for tests.

export class StatusBar {
  private readonly problems = new Map<string, string[]>();
  private lastUpdate: Date | null = null;

  constructor(private readonly element: HTMLElement) {
    this.render();
  }

  report(source: string, messages: readonly string[]): void {
    if (messages.length > 0) this.problems.set(source, [...messages]);
    else this.problems.delete(source);
    this.lastUpdate = new Date();
    this.render();
  }

  fail(source: string, error: unknown): void {
    this.report(source, [error instanceof Error ? error.message : String(error)]);
  }

  private render(): void {
    // Two replicas failing alike read as one line.
    const messages = [...new Set([...this.problems.values()].flat())];
    this.element.dataset.state = messages.length > 0 ? "error" : "ok";
    const items = messages.map((message) => {
      const item = document.createElement("li");
      item.textContent = message;
      return item;
    });
    if (items.length === 0) {
      const item = document.createElement("li");
      item.className = "ok";
      item.textContent = this.lastUpdate ? `all sources answer · ${this.lastUpdate.toLocaleTimeString([], { hour12: false })}` : "connecting…";
      items.push(item);
    }
    this.element.replaceChildren(...items);
  }
}
