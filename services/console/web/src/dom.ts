// Small DOM helpers: an element with attributes and children in one call, and
// a typed look-up of the elements index.html must have.

export type Child = Node | string | number | null | undefined | false;

// Attributes are set as given ("class", "data-edge", "title", ...); an
// undefined value leaves the attribute out. Text children are text nodes,
// never parsed as HTML.
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined) element.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === "number" ? String(child) : child);
  }
  return element;
}

export function byId<T extends HTMLElement>(id: string, type: { new (): T; prototype: T }): T {
  const element = document.getElementById(id);
  if (!(element instanceof type)) throw new Error(`index.html lacks the element #${id} (${type.name})`);
  return element;
}

// A coloured square or dot; the colour is set through the CSSOM, not a style
// attribute, so a strict Content-Security-Policy does not block it.
export function swatch(colour: string, className = "dot"): HTMLSpanElement {
  const element = h("span", { class: className, "aria-hidden": "true" });
  element.style.backgroundColor = colour;
  return element;
}
