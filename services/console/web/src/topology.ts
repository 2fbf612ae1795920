// The topology: a cytoscape graph laid out left to right by dagre, and beside
// it the same figures as a table of edges (id="edges") and a list of nodes
// (id="nodes"), whose data-* attributes the browser test reads.
//
// The graph keeps its node positions between polls: each poll updates the
// elements' data in place, and dagre lays the graph out again only when the
// set of nodes changes (a user who dragged a node keeps it where it is).

import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";

import type { Topology, TopologyEdge, TopologyNode } from "./api";
import { h, swatch } from "./dom";
import {
  clockTime,
  dataNumber,
  edgeLabel,
  edgeLook,
  formatMs,
  formatNumber,
  formatPercent,
  formatRate,
  healthColour,
  nodeLabel,
  nodeSetKey,
} from "./format";

cytoscape.use(dagre);

const STYLE: cytoscape.StylesheetJson = [
  {
    selector: "node",
    style: {
      shape: "round-rectangle",
      width: 124,
      height: 48,
      "background-color": "data(colour)",
      label: "data(label)",
      color: "#ffffff",
      "font-size": 14,
      "font-weight": "bold",
      "text-wrap": "wrap",
      "text-max-width": "118px",
      "text-valign": "center",
      "text-halign": "center",
      "border-width": 1,
      "border-color": "#1f2933",
    },
  },
  { selector: 'node[kind = "infrastructure"]', style: { shape: "barrel" } },
  { selector: 'node[kind = "client"]', style: { shape: "ellipse", "border-style": "dashed" } },
  {
    selector: "edge",
    style: {
      "curve-style": "bezier",
      width: "data(width)",
      "line-color": "data(colour)",
      "target-arrow-shape": "triangle",
      "target-arrow-color": "data(colour)",
      "arrow-scale": 1.1,
      label: "data(label)",
      "font-size": 12,
      color: "#1f2933",
      "text-wrap": "wrap",
      "text-max-width": "115px",
      // Along its edge a label stays clear of its neighbours where a
      // service fans out to several callees.
      "text-rotation": "autorotate",
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.85,
      "text-background-padding": "2px",
    },
  },
  { selector: "edge[?dashed]", style: { "line-style": "dashed" } },
  { selector: 'edge[breaker = "open"]', style: { color: "#b3261e", "font-weight": "bold" } },
  { selector: 'edge[breaker = "half-open"]', style: { color: "#b35c00", "font-weight": "bold" } },
  { selector: ":selected", style: { "overlay-color": "#4e79a7", "overlay-opacity": 0.15 } },
];

// cytoscape's own types know only its built-in layouts; the extension's
// options are checked here and handed over as layout options.
const LAYOUT: dagre.DagreLayoutOptions = {
  name: "dagre",
  rankDir: "LR",
  nodeSep: 60,
  rankSep: 150,
  edgeSep: 20,
  fit: true,
  padding: 24,
  animate: false,
};

function nodeData(node: TopologyNode): cytoscape.NodeDataDefinition {
  return { id: node.id, label: nodeLabel(node), colour: healthColour(node.health), kind: node.kind, health: node.health };
}

function edgeData(edge: TopologyEdge): cytoscape.EdgeDataDefinition {
  const look = edgeLook(edge);
  return {
    id: edge.id,
    source: edge.source,
    target: edge.target,
    label: edgeLabel(edge),
    colour: look.colour,
    width: look.width,
    dashed: look.dashed,
    breaker: edge.breaker ?? "none",
    transport: edge.transport,
  };
}

function uniqueById<T extends { id: string }>(items: readonly T[]): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (typeof item.id === "string" && !seen.has(item.id)) seen.set(item.id, item);
  return [...seen.values()];
}

export interface TopologyElements {
  graph: HTMLElement;
  edges: HTMLTableSectionElement;
  nodes: HTMLElement;
  meta: HTMLElement;
}

export class TopologyView {
  private readonly cy: cytoscape.Core;
  private nodeKey = "";
  private serviceIds: string[] = [];

  constructor(private readonly elements: TopologyElements) {
    this.cy = cytoscape({
      container: elements.graph,
      style: STYLE,
      minZoom: 0.3,
      maxZoom: 2.5,
      boxSelectionEnabled: false,
    });
    // The container can change size with the window; keep the graph in view.
    window.addEventListener("resize", () => this.cy.resize());
  }

  // The names of the mesh's own services, for the traces' service filter.
  services(): string[] {
    return this.serviceIds;
  }

  fit(): void {
    this.cy.fit(undefined, 24);
  }

  render(topology: Topology): void {
    const nodes = uniqueById(topology.nodes);
    this.serviceIds = nodes.filter((node) => node.kind === "service").map((node) => node.id);
    this.renderGraph(nodes, topology.edges);
    this.renderEdges(topology.edges);
    this.renderNodes(nodes);
    const interval = topology.interval_s === null ? "rates from the next scrape on" : `rates over ${formatNumber(topology.interval_s)} s`;
    this.elements.meta.textContent = `${interval} · ${clockTime(topology.generated_at)}`;
  }

  private renderGraph(nodes: TopologyNode[], allEdges: readonly TopologyEdge[]): void {
    const ids = new Set(nodes.map((node) => node.id));
    // cytoscape refuses an edge to a missing node and an id used twice; such
    // edges still show in the table.
    const edges = uniqueById(allEdges).filter((edge) => ids.has(edge.source) && ids.has(edge.target) && !ids.has(edge.id));
    const key = nodeSetKey([...ids]);
    const relayout = key !== this.nodeKey;
    this.cy.batch(() => {
      if (relayout) {
        this.cy.elements().remove();
        this.cy.add([
          ...nodes.map((node) => ({ group: "nodes" as const, data: nodeData(node) })),
          ...edges.map((edge) => ({ group: "edges" as const, data: edgeData(edge) })),
        ]);
        return;
      }
      for (const node of nodes) this.cy.getElementById(node.id).data(nodeData(node));
      const wanted = new Map(edges.map((edge) => [edge.id, edge]));
      this.cy.edges().forEach((element) => {
        const edge = wanted.get(element.id());
        // An edge's ends cannot change in place: one that moved is drawn anew.
        if (edge === undefined || element.data("source") !== edge.source || element.data("target") !== edge.target) element.remove();
      });
      for (const edge of edges) {
        const element = this.cy.getElementById(edge.id);
        if (element.empty()) this.cy.add({ group: "edges", data: edgeData(edge) });
        else element.data(edgeData(edge));
      }
    });
    if (relayout) {
      this.nodeKey = key;
      this.cy.layout(LAYOUT as unknown as cytoscape.LayoutOptions).run();
    }
  }

  private renderEdges(edges: readonly TopologyEdge[]): void {
    const rows = edges.map((edge) => {
      const breaker = edge.breaker ?? "";
      return h(
        "tr",
        {
          "data-edge": edge.id,
          "data-rate": dataNumber(edge.rate),
          "data-error-ratio": dataNumber(edge.error_ratio),
          "data-breaker": breaker,
          "data-transport": edge.transport,
          class: breaker ? `breaker-${breaker}` : undefined,
        },
        h("td", { class: "edge-name" }, `${edge.source} → ${edge.target}`),
        h("td", {}, edge.transport),
        h("td", { class: "num" }, formatRate(edge.rate)),
        h("td", { class: edge.error_ratio ? "num bad" : "num" }, formatPercent(edge.error_ratio)),
        h("td", { class: "num" }, formatMs(edge.p50_ms)),
        h("td", { class: "num" }, formatMs(edge.p99_ms)),
        h("td", { class: "num" }, edge.calls === null ? "–" : String(edge.calls)),
        h("td", { class: "breaker" }, breaker ? h("span", { class: `badge breaker-${breaker}` }, breaker) : "–"),
      );
    });
    if (rows.length === 0) rows.push(h("tr", { class: "empty" }, h("td", { colspan: "8" }, "no edges yet")));
    this.elements.edges.replaceChildren(...rows);
  }

  private renderNodes(nodes: readonly TopologyNode[]): void {
    const items = nodes.map((node) =>
      h(
        "li",
        { "data-node": node.id, "data-health": node.health, "data-kind": node.kind },
        swatch(healthColour(node.health)),
        h("span", { class: "node-name" }, node.id),
        h("span", { class: "node-health" }, node.health),
        node.replicas === null ? null : h("span", { class: "node-replicas" }, `${node.replicas_up ?? "–"}/${node.replicas}`),
      ),
    );
    this.elements.nodes.replaceChildren(...items);
  }
}
