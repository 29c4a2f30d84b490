/**
 * The results as text: a table for the terminal and results.md (the charts
 * are chart.ts's). What a row holds, and how its figures are written.
 */

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
