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

/** What every column and every note of the table means. */
const READING = `## How to read the table

Numbers compare only within this one run, on this machine: rerun
\`deno task bench\` to compare on yours.

Columns:

- **scenario**, **server**: the recipe, and who served it: ours (Deno), the
  book's own script (Python, with \`--vs=book\`), a peer from \`bench/peers/\`,
  or a \`--vs\` command.
- **load**: how it was driven. \`concurrency N\`: N clients, each making one
  connection after another (connect, send, read the reply to the close).
  \`N connections\`: N long-lived connections, each sending its next line as
  soon as its reply comes (closed loop). \`W = N\`: 50 chat clients, one of
  them sending with at most N messages in flight. \`N held open\`: the memory
  scenario (below).
- **rate**, **unit**: completed operations per second over the timed window
  (higher is better); for a held-open row, the server's memory per
  connection in KB (lower is better).
- **p50 ms**, **p99 ms**: the median and 99th-percentile latency of one
  operation in milliseconds (lower is better); the note says whether it
  includes the connect. At 500 closed-loop connections the mean latency is
  simply 500 divided by the rate. For a held-open row, p50 is the median time
  from connect to the first reply over the first connections, made one at a
  time: what it costs to start one connection.
- **fewest/most**: fairness. The fewest and the most replies that one
  connection (for 2_1/2_2, one client; for 2_3, one receiver) got in the
  timed window, each divided by the mean. \`1.00 / 1.00\` is perfectly fair;
  \`0.34 / 2.10\` means the slowest connection got only 34% of the average
  connection's replies while the luckiest got 2.1 times the average. It
  matters because a server can post a high rate by serving a hot set of
  connections while others wait: their users see the p99, or worse, a
  stall. "-" where there is one connection, or wrk (which does not report
  per connection).
- **load CPU**: the load generator's CPU time over the timed window as a
  share of its one core (this Deno process, or wrk).
- **errors**: failed operations (refused, reset, timeout, bad reply...),
  listed in the note.

Notes:

- \`load-bound: the generator used N% of its core\`: the generator was at
  90% of its core or more, so the rate is (at least partly) the generator's
  limit, not the server's; a faster generator (wrk, or one written in C)
  would measure the server.
- \`latency includes connect\` / \`wrk latency excludes connect\`: whether
  the TCP connect is inside the latency.
- \`wrk saw N closes after complete responses (no Connection: close), not
  errors\`: the book's fixed response has no \`Connection: close\`, so wrk
  tries to reuse a connection the server closed and counts a read error per
  response; those are not errors.
- \`N messages to 49 receivers\`: how many chat messages completed (each is
  49 deliveries).
- Held-open rows (the memory scenario): N connections are opened and each is
  served once (a line echoed; a chat name answered, with the join notices
  every other client receives drained before measuring; for 2_4 half a
  request head is held, since a served HTTP connection is closed; 2_1 and 2_2
  hold their cap of 40 with no request yet, so 40 handler processes or
  Workers wait). The figure is the growth of the server's whole process tree
  divided by N: \`PSS\` (proportional set size, where pages that processes
  share are split between them, so forty handlers sharing one runtime's code
  are not counted forty times) or \`RSS\` where PSS is not available.
  \`N handler processes\`: how many processes the tree had besides the
  server. \`stopped at K of N (...)\` / \`the server exited at connection K\`:
  it could not hold N, and why: the book's \`select()\` chat server cannot
  watch descriptors past 1,024 (FD_SETSIZE), so it dies there; that is its
  result, \`measured at K held, before it exited\`. \`open-file limit L: held
  at most M\`: the run could not raise its descriptor limit far enough.
  \`X KB right after the joins drained, given back after S s idle\` (chat
  rows): 2,000 joins are about 2 million notices, and V8 keeps the heap they
  grew until its memory reducer runs, some seconds after the process went
  idle; the row's figure is taken once the growth has fallen by a tenth or
  more and holds (at most 30 s is waited), and X is the figure before.
- SKIPPED: not run, and the note says why (the book's 2_5 needs diesel, which
  does not run on Python 3; BOOK_DIR not set). FAILED: the server failed its
  correctness check (or the run) and was not timed. MISSING: a recipe not
  written yet. \`the server exited during the run\`: it crashed under load.
`;

/** The start-up costs as a markdown section ("" when not measured). */
function costSection(costs: Cost[]): string {
  if (costs.length === 0) return "";
  return `
## The mechanisms' floors

2_1 starts a Deno process per connection and 2_2 a Worker; the book's Python
forks or starts a thread. What the mechanism alone costs, measured in this
run (the chart draws these beside 2_1 and 2_2, so you can see each recipe is
about as cheap as its mechanism allows); a start is the median of repeated
starts:

| mechanism | start ms | KB | measured as |
|---|---:|---:|---|
${
    costs.map((c) =>
      `| ${c.what} | ${formatMs(c.ms)} | ${formatKb(c.kb)} | ${c.note} |`
    ).join("\n")
  }
`;
}

export function markdown(
  rows: Row[],
  machine: Machine,
  costs: Cost[] = [],
): string {
  const titles = [...new Set(rows.map((r) => r.scenario))].map((id) => {
    const of = rows.filter((r) => r.scenario === id && r.held === undefined);
    const generators = [...new Set(of.map((r) => r.generator))].join(", ");
    return `${of[0].title} (${of[0].unit}); load: ${generators}`;
  });
  return `# Benchmark results

![What one connection costs, per model](results.svg)

The chart is the chapter's lesson in one picture. Each group is one model
(a process per connection, a thread per connection, one event loop serving
chat, web and echo); each bar is one server. Three quantities, each on one
logarithmic axis shared by every model (each gridline is 10 times the last),
so orders of magnitude show as lengths: what it costs to **start** one
connection (connect to the first reply, ms), to **hold** one open (the
server's memory per connection, KB), and what its **one core serves** per
second (the best rate of its rows below, in the scenario's unit). Beside
2_1 and 2_2 stand the floors of their mechanisms (a bare Deno process, a bare
Worker, Python's fork() and thread): a recipe near its floor is as cheap as
its mechanism allows. The table below has every figure.

Measured by \`${machine.command}\` on ${machine.date}.

- Machine: ${machine.cores} cores (${machine.cpu}), ${machine.os}
- Deno ${machine.deno}; Node ${machine.node}; wrk ${machine.wrk}
- ${machine.pinning}
- Each run: a fresh server, a correctness check, ${machine.warmup} s of warm-up, then ${machine.seconds} s timed (a held-open row: see below).

Scenarios:
${titles.map((t) => `- ${t}`).join("\n")}

${markdownTable(rows)}

${READING}
${costSection(costs)}`;
}

/** The chart's models: one row group each, in the chapter's order. */
const MODELS = [
  { id: "2_1", title: "2_1 · a process per connection" },
  { id: "2_2", title: "2_2 · a thread per connection" },
  { id: "2_3", title: "2_3 · one event loop: chat" },
  { id: "2_4", title: "2_4 · one event loop: web" },
  { id: "2_5", title: "2_5 · one event loop: echo" },
];

const WHO = {
  ours: "ours (Deno)",
  book: "the book (Python)",
  peer: "a peer",
  vs: "--vs server",
  floor: "the mechanism's floor",
} as const;
const COLORS: Record<string, string> = {
  [WHO.ours]: "#4c78a8",
  [WHO.book]: "#f58518",
  [WHO.peer]: "#a0a0a0",
  [WHO.vs]: "#e45756",
  [WHO.floor]: "#72b7b2",
};

/** The three quantities, each on its own logarithmic axis shared by every model. */
const QUANTITIES = [
  {
    id: "start",
    title: "start one connection (ms)",
    text: (v: number) => `${formatMs(v)} ms`,
  },
  {
    id: "memory",
    title: "memory per connection (KB)",
    text: (v: number) => `${formatKb(v)} KB`,
  },
  {
    id: "rate",
    title: "served per second, one core",
    text: (v: number) => `${formatRate(v)}/s`,
  },
] as const;

/** A row of the chart: `key` is "model|label" ("model|#title" for a model's heading). */
interface ChartRow {
  key: string;
  who?: string;
  start?: number;
  memory?: number;
  rate?: number;
  unit?: string;
  /** Fewer held than asked for: "only 1,000 held". */
  short?: string;
}

/** 1, 10, 100, ... from `low` to `high`. */
function powersOfTen([low, high]: [number, number]): number[] {
  const out: number[] = [];
  for (let v = low; v <= high * 1.001; v *= 10) {
    out.push(Number(v.toPrecision(1)));
  }
  return out;
}

/** "2_4 (ours)" -> "ours (Deno)", "Node http (peer)" -> "Node http". */
function shortName(row: Row): string {
  if (row.kind === "ours") return "ours (Deno)";
  if (row.kind === "book") return "the book's script (Python)";
  return row.server.replace(/ \(peer\)$/, "");
}

/** Per model: a heading, then each server's three figures, then the mechanism's floors. */
export function chartRows(rows: Row[], costs: Cost[] = []): ChartRow[] {
  const out: ChartRow[] = [];
  for (const model of MODELS) {
    const of = rows.filter((r) => r.scenario === model.id && r.status === "ok");
    const floors = costs.filter((c) => c.model === model.id);
    if (of.length === 0 && floors.length === 0) continue;
    out.push({ key: `${model.id}|#${model.title}` });
    for (const server of [...new Set(of.map((r) => r.server))]) {
      const mine = of.filter((r) => r.server === server);
      const held = mine.find((r) => r.held !== undefined);
      const timed = mine.filter((r) => r.held === undefined && r.rate);
      const best = timed.sort((a, b) => (b.rate ?? 0) - (a.rate ?? 0))[0];
      out.push({
        key: `${model.id}|${shortName(mine[0])}`,
        who: WHO[mine[0].kind],
        start: held?.p50,
        memory: held?.rate,
        rate: best?.rate,
        unit: best?.unit,
        short: held && held.held !== undefined &&
            held.held < Number(held.load.replace(/\D/g, ""))
          ? `only ${held.held.toLocaleString("en-US")} held`
          : undefined,
      });
    }
    for (const floor of floors) {
      out.push({
        key: `${model.id}|floor: ${floor.label}`,
        who: WHO.floor,
        start: floor.ms,
        memory: floor.kb,
      });
    }
  }
  return out;
}

/**
 * The chart: per model (a process per connection, a thread per connection,
 * one event loop for chat, web and echo), what one connection costs to
 * start and to hold, and what one core serves per second; each quantity on
 * one logarithmic axis shared by every model, so orders of magnitude show
 * as lengths.
 */
export function chartSpec(
  rows: Row[],
  machine: Machine,
  costs: Cost[] = [],
): vegaLite.TopLevelSpec {
  const chart = chartRows(rows, costs);
  const keys = chart.map((r) => r.key);
  const values = chart.flatMap((r) =>
    QUANTITIES.flatMap((q) => {
      const value = r[q.id];
      if (value === undefined || !(value > 0)) return [];
      const text = q.id === "rate" && r.unit
        ? `${formatRate(value)} ${r.unit}`
        : q.id === "memory" && r.short
        ? `${q.text(value)} (${r.short})`
        : q.text(value);
      return [{ key: r.key, who: r.who, quantity: q.id, value, text }];
    })
  );
  const present = Object.values(WHO).filter((w) =>
    values.some((v) => v.who === w)
  );
  const untimed = [
    ...new Set(
      rows.filter((r) => r.status !== "ok").map((r) =>
        `${r.server} ${r.status}`
      ),
    ),
  ];
  // Each axis spans whole powers of ten around its figures, with room
  // right of the longest bar for its label.
  const decades = (id: string): [number, number] => {
    const of = values.filter((v) => v.quantity === id).map((v) => v.value);
    if (of.length === 0) return [1, 10];
    // A decade below the smallest when it sits on a power of ten, so its bar shows.
    const low = 10 ** Math.floor(Math.log10(Math.min(...of)) - 0.3);
    const high = 10 ** Math.ceil(Math.log10(Math.max(...of) * 30));
    return [low, Math.max(high, low * 10)];
  };
  const column = (
    q: (typeof QUANTITIES)[number],
    first: boolean,
  ): vegaLite.TopLevelSpec => ({
    width: 250,
    height: { step: 17 },
    transform: [{ filter: { field: "quantity", equal: q.id } }],
    layer: [
      { mark: { type: "bar", height: 12 } },
      {
        mark: { type: "text", align: "left", dx: 3, fontSize: 10 },
        encoding: { text: { field: "text" } },
      },
    ],
    encoding: {
      y: {
        field: "key",
        type: "nominal",
        sort: null,
        scale: { domain: keys },
        title: null,
        axis: first
          ? {
            labelExpr: "replace(split(datum.label, '|')[1], '#', '')",
            labelFontWeight: {
              condition: {
                test: "indexof(datum.label, '|#') >= 0",
                value: "bold",
              },
              value: "normal",
            },
            labelLimit: 320,
            labelFontSize: 11,
            ticks: false,
            domain: false,
          }
          : { labels: false, ticks: false, domain: false },
      },
      x: {
        field: "value",
        type: "quantitative",
        stack: null,
        scale: { type: "log", domain: decades(q.id), nice: false },
        title: q.title,
        axis: {
          orient: "top",
          labelExpr:
            "datum.value < 1 ? format(datum.value, '') : format(datum.value, '~s')",
          grid: true,
          values: powersOfTen(decades(q.id)),
          titleFontSize: 12,
        },
      },
      color: {
        field: "who",
        type: "nominal",
        title: null,
        scale: { domain: present, range: present.map((w) => COLORS[w]) },
        legend: {
          orient: "bottom",
          direction: "horizontal",
          labelLimit: 300,
        },
      },
    },
  } as unknown as vegaLite.TopLevelSpec);
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text:
        "What one connection costs, per model (logarithmic axes: each gridline is 10x)",
      subtitle: [
        "Start: connect to the first reply. Memory: the server's growth per connection held open (PSS). Served: the best rate its one core reached.",
        `${machine.date}, ${machine.cores} cores, Deno ${machine.deno}, ${machine.seconds} s per run. Shorter is cheaper on the first two axes; longer is more on the third.`,
        ...(untimed.length ? [`Not measured: ${untimed.join(", ")}`] : []),
      ],
      anchor: "start",
      subtitleFontSize: 11,
    },
    data: { values },
    hconcat: QUANTITIES.map((q, i) => column(q, i === 0)),
    spacing: 24,
    config: { font: "sans-serif", view: { stroke: null } },
  } as unknown as vegaLite.TopLevelSpec;
}

export async function chartSvg(
  rows: Row[],
  machine: Machine,
  costs: Cost[] = [],
): Promise<string> {
  // Errors only: vega-lite warns that the panels' independent scales share
  // field names, which is what we want (each scenario has its own unit).
  const logger = vega.logger(vega.Error);
  const compiled = vegaLite.compile(chartSpec(rows, machine, costs), { logger })
    .spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
