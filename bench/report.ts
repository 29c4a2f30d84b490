/**
 * The results: a table for the terminal, bench/results.md, and
 * bench/results.svg drawn by vega-lite (compiled to a vega spec and rendered
 * to SVG headless: no browser, no canvas).
 */

import * as vega from "vega";
import * as vegaLite from "vega-lite";
import type { Cost } from "./costs.ts";

export interface Row {
  /** Scenario id ("2_4") and its title and unit. */
  scenario: string;
  title: string;
  unit: string;
  server: string;
  kind: "ours" | "peer" | "book" | "vs";
  load: string;
  generator: string;
  status: "ok" | "failed" | "missing" | "skipped";
  /** Per second; for the memory scenario, KB per connection. */
  rate?: number;
  /** Milliseconds; for the memory scenario, p50 is connect to first reply. */
  p50?: number;
  p99?: number;
  /** Fewest and most replies one connection got, against the mean (1 = fair). */
  fewest?: number;
  most?: number;
  /** The load generator's share of its core in the timed window. */
  loadCpu?: number;
  /** The memory scenario: connections held when measured. */
  held?: number;
  errors?: number;
  note: string;
}

export interface Machine {
  date: string;
  cores: number;
  cpu: string;
  os: string;
  deno: string;
  node: string;
  wrk: string;
  pinning: string;
  seconds: number;
  warmup: number;
  command: string;
}

export function formatRate(rate: number | undefined): string {
  if (rate === undefined || Number.isNaN(rate)) return "-";
  return rate.toLocaleString("en-US", {
    maximumFractionDigits: rate >= 100 ? 0 : 1,
  });
}

export function formatKb(kb: number | undefined): string {
  if (kb === undefined || Number.isNaN(kb)) return "-";
  return kb < 10 ? kb.toFixed(2) : kb < 1000 ? kb.toFixed(1) : formatRate(kb);
}

export function formatFairness(
  fair: { fewest?: number; most?: number } | undefined,
): string {
  if (fair?.fewest === undefined || fair.most === undefined) return "-";
  return `${fair.fewest.toFixed(2)} / ${fair.most.toFixed(2)}`;
}

export function formatMs(ms: number | undefined): string {
  if (ms === undefined || Number.isNaN(ms)) return "-";
  return ms < 10 ? ms.toFixed(2) : ms.toFixed(1);
}

const HEADER = [
  "scenario",
  "server",
  "load",
  "rate",
  "unit",
  "p50 ms",
  "p99 ms",
  "fewest/most",
  "load CPU",
  "errors",
  "notes",
];
/** Right-aligned columns (numbers). */
const NUMERIC = new Set([3, 5, 6, 7, 8, 9]);
const NOTES = HEADER.length - 1;

function cells(row: Row): string[] {
  const ok = row.status === "ok";
  const memory = row.held !== undefined;
  return [
    row.scenario,
    row.server,
    row.load,
    !ok
      ? row.status.toUpperCase()
      : memory
      ? formatKb(row.rate)
      : formatRate(row.rate),
    row.unit,
    ok ? formatMs(row.p50) : "-",
    ok ? formatMs(row.p99) : "-",
    ok ? formatFairness(row) : "-",
    ok && row.loadCpu !== undefined ? `${Math.round(row.loadCpu * 100)}%` : "-",
    ok ? String(row.errors ?? 0) : "-",
    row.note,
  ];
}

/** A plain-text table for the terminal. */
export function textTable(rows: Row[]): string {
  const body = rows.map(cells);
  const widths = HEADER.map((h, i) =>
    Math.max(h.length, ...body.map((r) => i === NOTES ? 0 : r[i].length))
  );
  const line = (r: string[]) =>
    r.map((c, i) =>
      i === NOTES
        ? c
        : NUMERIC.has(i)
        ? c.padStart(widths[i])
        : c.padEnd(widths[i])
    )
      .join("  ").trimEnd();
  return [
    line(HEADER),
    line(widths.map((w) => "-".repeat(w))),
    ...body.map(line),
  ].join("\n");
}

function markdownTable(rows: Row[]): string {
  const esc = (s: string) => s.replaceAll("|", "\\|");
  return [
    `| ${HEADER.join(" | ")} |`,
    `|${
      HEADER.map((_, i) => NUMERIC.has(i) ? "---:" : "---").join(
        "|",
      )
    }|`,
    ...rows.map((r) => `| ${cells(r).map(esc).join(" | ")} |`),
  ].join("\n");
}

/** The start-up costs as a markdown section ("" when not measured). */
function costSection(costs: Cost[]): string {
  if (costs.length === 0) return "";
  return `
## What one connection costs to start

2_1 starts a Deno process per connection and 2_2 a Worker; the book's Python
forks or starts a thread. Median of repeated starts, measured in this run:

| start | ms | measured as |
|---|---:|---|
${costs.map((c) => `| ${c.what} | ${formatMs(c.ms)} | ${c.note} |`).join("\n")}
`;
}

export function markdown(
  rows: Row[],
  machine: Machine,
  costs: Cost[] = [],
): string {
  const titles = [...new Set(rows.map((r) => r.scenario))].map((id) => {
    const of = rows.filter((r) => r.scenario === id);
    const generators = [...new Set(of.map((r) => r.generator))].join(", ");
    return `${of[0].title} (${of[0].unit}); load: ${generators}`;
  });
  return `# Benchmark results

![The table below as a chart](results.svg)

Measured by \`${machine.command}\` on ${machine.date}.

- Machine: ${machine.cores} cores (${machine.cpu}), ${machine.os}
- Deno ${machine.deno}; Node ${machine.node}; wrk ${machine.wrk}
- ${machine.pinning}
- Each run: a fresh server, a correctness check, ${machine.warmup} s of warm-up, then ${machine.seconds} s timed.

Scenarios:
${titles.map((t) => `- ${t}`).join("\n")}

${markdownTable(rows)}

How to read it: rates are per second over the timed window (higher is
better); p50 and p99 are latencies in milliseconds (lower is better). Numbers
compare only within this one run, on this machine: rerun \`deno task bench\`
to compare on yours. A server that fails its correctness check is marked
FAILED and not timed; a recipe not written yet is MISSING.
${costSection(costs)}`;
}

const WHO = {
  ours: "our recipe",
  peer: "peer",
  book: "the book's Python",
  vs: "--vs server",
} as const;
const COLORS: Record<string, string> = {
  "our recipe": "#4c78a8",
  peer: "#a0a0a0",
  "the book's Python": "#f58518",
  "--vs server": "#e45756",
};

/** The chart: one panel per scenario, a bar per server and load. */
export function chartSpec(
  rows: Row[],
  machine: Machine,
): vegaLite.TopLevelSpec {
  // Panels in the run's order; in each, bars grouped by load, then server.
  const ok = rows.filter((r) => r.status === "ok" && r.held === undefined);
  const rank = (r: Row) => {
    const panel = rows.filter((o) => o.scenario === r.scenario);
    const loads = [...new Set(panel.map((o) => o.load))];
    const servers = [...new Set(panel.map((o) => o.server))];
    return rows.indexOf(panel[0]) * 1e6 + loads.indexOf(r.load) * 1e3 +
      servers.indexOf(r.server);
  };
  const values = ok.map((r) => ({
    panel: `${r.title} (${r.unit})`,
    bar: `${r.load} · ${r.server}`,
    order: rank(r),
    rate: r.rate ?? 0,
    label: formatRate(r.rate),
    who: WHO[r.kind],
  })).sort((a, b) => a.order - b.order);
  const untimed = [
    ...new Set(
      rows.filter((r) => r.status !== "ok").map((r) =>
        `${r.server} ${r.status}`
      ),
    ),
  ];
  const present = Object.values(WHO).filter((w) =>
    values.some((v) => v.who === w)
  );
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: "Chapter 2 recipes under load (higher is better)",
      subtitle: [
        `${machine.date}, ${machine.cores} cores, Deno ${machine.deno}, ${machine.seconds} s per run`,
        ...(untimed.length ? [`Not timed: ${untimed.join(", ")}`] : []),
      ],
      anchor: "start",
    },
    data: { values },
    facet: {
      row: {
        field: "panel",
        type: "nominal",
        sort: null,
        title: null,
        header: {
          labelAngle: 0,
          labelAlign: "left",
          labelAnchor: "start",
          labelOrient: "top",
          labelFontWeight: "bold",
        },
      },
    },
    spec: {
      width: 420,
      layer: [
        { mark: { type: "bar" } },
        {
          mark: { type: "text", align: "left", dx: 3 },
          encoding: { text: { field: "label" } },
        },
      ],
      encoding: {
        y: {
          field: "bar",
          type: "nominal",
          sort: null,
          title: null,
          axis: { labelLimit: 320 },
        },
        x: { field: "rate", type: "quantitative", title: null },
        color: {
          field: "who",
          type: "nominal",
          title: null,
          scale: { domain: present, range: present.map((w) => COLORS[w]) },
          legend: { orient: "bottom" },
        },
      },
    },
    resolve: { scale: { x: "independent", y: "independent" } },
    config: { font: "sans-serif", view: { stroke: null } },
  };
}

export async function chartSvg(rows: Row[], machine: Machine): Promise<string> {
  // Errors only: vega-lite warns that the panels' independent scales share
  // field names, which is what we want (each scenario has its own unit).
  const logger = vega.logger(vega.Error);
  const compiled = vegaLite.compile(chartSpec(rows, machine), { logger }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
