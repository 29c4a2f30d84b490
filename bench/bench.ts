/**
 * `deno task bench`: every chapter-2 recipe under the same load, side by
 * side, so the chapter's lesson shows in numbers and in a picture: a process
 * per connection (2_1), a thread per connection (2_2), and one multiplexed
 * event loop (2_3, 2_4, 2_5).
 *
 *     deno task bench                       # every scenario, 5 s each, into bench/out/
 *     deno task bench --save                # also rewrite the committed bench/results.*
 *     deno task bench --only=2_4 --seconds=10
 *     BOOK_DIR=/path/to/Chapter02 deno task bench --vs=book   # the book's scripts beside ours
 *     deno task bench --only=2_4 --vs='python3 /path/to/2_4_simple_web_server_with_epoll.py --port={port}'
 *     deno task bench --only=2_3 --vs='python3 /path/to/2_3_chat_server_with_select.py --name=server --port={port}'
 *
 * For each server: start it on a free port, check that it answers correctly
 * (a failure is reported, not timed), warm it up (--warmup, 1 s), drive it for
 * --seconds, stop it. Where `taskset` exists the servers run on core 1 and
 * the load generators (this process and wrk) on core 0. Each row prints a
 * line as it starts and as it ends, with how many rows are left. Writes a
 * table to stdout, and results.md, results.svg (English) and results.ko.svg
 * (Korean) to --out (default: bench/out/, which git ignores); only --save
 * rewrites the committed ones in bench/, keeping results.md's hand-measured
 * section. An --out the task may not write to is refused before anything
 * runs, with the command that would work.
 *
 * The map, from the command line down: bench.ts imports the scenarios, the
 * scenarios import the shared modules, no shared module imports a scenario,
 * and no import cycle exists, type-only or not (tests/bench_test.ts checks
 * both, walking `deno info --json bench/bench.ts`, and that this map names
 * every file in bench/):
 *
 *     bench.ts            the command line and the run: rows planned, measured, written
 *     scenarios/          one module per recipe's scenario: what it starts, the load it
 *                         drives, what it checks, how it holds a connection open
 *       2_1_forking.ts      a process per connection (the shape in one_shot.ts)
 *       2_2_threading.ts    a Worker per connection (the shape in one_shot.ts)
 *       2_3_chat.ts         select chat: joins, one sender, W in flight; 2,000 held
 *       2_4_web.ts          epoll web: one request per connection (wrk); 10,000 held
 *       2_5_echo.ts         diesel echo: closed-loop lines; 10,000 held
 *     -- shared: nothing below imports a scenario --
 *     measure.ts          one row: start, check, then the timed path or the held-open path
 *     options.ts          the options, their checks, the help
 *     files.ts            --out and --save, the hand-measured section kept
 *     scenario.ts         what a scenario is: servers, check, timed and held loads
 *     one_shot.ts         2_1's and 2_2's shape: one exchange per connection
 *     book.ts             --vs=book: the book's scripts from BOOK_DIR, or why one is skipped
 *     servers.ts          starting a server (pinned), its ready line, stopping it
 *     load.ts             the Deno load generators: HTTP, line echo, a connection per message
 *     chat_load.ts        the 2_3 load generator, over chat_client.ts (2_3's own frames)
 *     wrk.ts              the 2_4 load under wrk, and parsing its report
 *     hold.ts             the held-open path: connections held, the server weighed
 *     costs.ts            the mechanisms' floors: a Deno process, a Worker, fork(), a thread
 *     report.ts           the terminal table and results.md
 *     chart.ts            the chart, in English and in Korean
 *     machine.ts          the machine's description and the core pinning
 *     proc.ts             a process tree's memory and the open-file limit (proc.py)
 *     net.ts, stats.ts    connect/write/read and the watchdog; LoadResult, samples, median
 *     peers/              the peer servers (a minimal Deno server, Node http and net)
 *     *.py                what Deno cannot do with the task's permissions, each saying why:
 *                         proc.py, wrk_cpu.py, python_floors.py, book_server.py, is_file.py
 *     idle_workers.ts     a Deno process holding N idle Workers, for costs.ts
 *
 * Nothing here keeps state at module level: main() builds a Session that it
 * hands to measure(), and every result is a named type (Row, LoadResult,
 * HeldResult, Cost).
 */

import { chartSvg } from "./chart.ts";
import { measureCosts } from "./costs.ts";
import { assertWritable, type Results, SAVED, writeResults } from "./files.ts";
import { describeMachine, pin } from "./machine.ts";
import { measure, type Session } from "./measure.ts";
import { type Options, parseOptions } from "./options.ts";
import { raiseOpenFiles } from "./proc.ts";
import {
  formatMs,
  type Machine,
  markdown,
  type Row,
  textTable,
} from "./report.ts";
import {
  heldLabel,
  type Load,
  MEMORY_UNIT,
  type Scenario,
} from "./scenario.ts";
import { forking } from "./scenarios/2_1_forking.ts";
import { threading } from "./scenarios/2_2_threading.ts";
import { chat } from "./scenarios/2_3_chat.ts";
import { web } from "./scenarios/2_4_web.ts";
import { echo } from "./scenarios/2_5_echo.ts";
import type { ServerSpec } from "./servers.ts";
import type { Cost } from "./costs.ts";
import { installed } from "./wrk.ts";

/** The scenarios' ids, in the order they run. */
const SCENARIO_IDS = ["2_1", "2_2", "2_3", "2_4", "2_5"];

/** The five scenarios, in the order of SCENARIO_IDS. */
function scenarios(wrkPrefix: string[] | undefined, options: Options) {
  return [
    forking,
    threading,
    chat(options.vsFrame),
    web(wrkPrefix),
    echo,
  ] as Scenario[];
}

/** One row to measure: a load of one scenario on one server. */
interface Planned {
  scenario: Scenario;
  spec: ServerSpec;
  load: Load<unknown>;
  base: Row;
}

/** The row before it is measured: what it is, status "ok" until it is not. */
function baseRow(
  scenario: Scenario,
  spec: ServerSpec,
  load: Load<unknown>,
  heldMax: number | undefined,
): Row {
  return {
    scenario: scenario.id,
    title: scenario.title,
    unit: load.kind === "held" ? MEMORY_UNIT : scenario.unit,
    server: spec.label,
    kind: spec.kind,
    load: load.kind === "held"
      ? heldLabel(Math.min(load.wanted, heldMax ?? load.wanted))
      : load.label,
    generator: load.kind === "held" ? "Deno client" : load.generator(),
    status: "ok",
    note: "",
  };
}

/** Every row the run will have, per scenario and server, in order. */
async function plan(
  chosen: Scenario[],
  options: Options,
): Promise<Planned[]> {
  const planned: Planned[] = [];
  for (const scenario of chosen) {
    for (const spec of await scenario.servers(options.versus)) {
      for (const load of scenario.loads) {
        const base = baseRow(scenario, spec, load, options.held);
        planned.push({ scenario, spec, load, base });
      }
    }
  }
  return planned;
}

/** A command word as the progress line shows it (a helper's full path as its file name). */
function shown(word: string): string {
  return word.replace(/^\/.*\/bench\//, "bench/");
}

/** The line that opens a server's rows: its command, or why it is skipped. */
function announce(spec: ServerSpec, pinned: string[]): void {
  if (spec.skip) {
    console.log(`-- ${spec.label}: SKIPPED: ${spec.skip}`);
  } else {
    const command = [...pinned, ...spec.command.map(shown)].join(" ");
    console.log(`-- ${spec.label}: ${command}`);
  }
}

/** Measures the planned rows in order, with a line as each starts and ends. */
async function measureAll(
  planned: Planned[],
  session: Session,
): Promise<Row[]> {
  const rows: Row[] = [];
  const total = planned.filter((p) => !p.spec.skip).length;
  let done = 0;
  /** The row that made a server untimed: its other loads say the same. */
  const givenUp = new Map<ServerSpec, Row>();
  for (const [i, { scenario, spec, load, base }] of planned.entries()) {
    if (scenario !== planned[i - 1]?.scenario) {
      console.log(`\n== ${scenario.title}`);
    }
    if (spec !== planned[i - 1]?.spec) announce(spec, session.pin);
    const gaveUp = givenUp.get(spec);
    if (spec.skip) {
      rows.push({ ...base, status: "skipped", note: spec.skip });
      continue;
    }
    done += 1;
    if (gaveUp) {
      rows.push({ ...base, status: gaveUp.status, note: gaveUp.note });
      console.log(
        `   [${done}/${total}] ${base.load}: ${gaveUp.status}, as above`,
      );
      continue;
    }
    console.log(`   [${done}/${total}] ${base.server}, ${base.load}: starting`);
    const { row, untimed } = await measure(session, base, scenario, spec, load);
    rows.push(row);
    if (untimed) givenUp.set(spec, row);
    const left = total - done;
    console.log(
      `   [${done}/${total}] done; ${left} row${left === 1 ? "" : "s"} left`,
    );
  }
  return rows;
}

/** The floors of 2_1's and 2_2's mechanisms, when either ran (printed too). */
async function floors(rows: Row[]): Promise<Cost[]> {
  const wanted = rows.some((r) => r.scenario === "2_1" || r.scenario === "2_2");
  if (!wanted) return [];
  console.log("Measuring the mechanisms' floors ...");
  const costs = await measureCosts();
  for (const cost of costs) {
    console.log(`${cost.what}: ${formatMs(cost.ms)} ms (${cost.note})`);
  }
  return costs;
}

/** results.md and the two charts. */
async function results(
  rows: Row[],
  machine: Machine,
  costs: Cost[],
): Promise<Results> {
  return {
    "results.md": markdown(rows, machine, costs),
    "results.svg": await chartSvg(rows, machine, costs, "en"),
    "results.ko.svg": await chartSvg(rows, machine, costs, "ko"),
  };
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args, SCENARIO_IDS);
  const { out, save, seconds, warmup } = options;
  const targets = save && out !== SAVED ? [out, SAVED] : [out];
  // Before anything runs: a folder the run may not write would only fail
  // after minutes of measuring.
  for (const dir of targets) await assertWritable(dir);

  const pinning = await pin(navigator.hardwareConcurrency);
  const useWrk = options.wrk && installed("wrk");
  const machine = await describeMachine(pinning, seconds, warmup);
  const all = scenarios(useWrk ? pinning.load : undefined, options);
  const chosen = all.filter((s) =>
    !options.only || options.only.includes(s.id)
  );
  // This process holds the memory scenario's client sockets and the servers
  // it starts inherit its limit: 10,000 connections need more than the
  // usual 1,024 descriptors.
  const files = await raiseOpenFiles(
    Math.min(options.held ?? 10_000, 10_000) + 1_000,
  );
  const session: Session = {
    pin: pinning.server,
    heldMax: options.held,
    phases: { warmup, seconds },
  };
  Deno.addSignalListener("SIGINT", async () => {
    console.log("\nInterrupted: stopping the server under test...");
    await session.current?.stop();
    Deno.exit(130);
  });

  console.log(
    `Benchmark: ${machine.cores} cores, Deno ${machine.deno}, ${seconds} s per run after ${warmup} s warm-up`,
  );
  console.log(pinning.text);
  console.log(`Memory scenario: ${files}.`);
  console.log(
    useWrk
      ? `HTTP load: wrk (${machine.wrk})`
      : "HTTP load: the Deno generator (wrk not used)",
  );
  const planned = await plan(chosen, options);
  console.log(`${planned.filter((p) => !p.spec.skip).length} rows to measure.`);
  const rows = await measureAll(planned, session);

  console.log(`\n${textTable(rows)}\n`);
  const written = await results(rows, machine, await floors(rows));
  const names = Object.keys(written).join(", ");
  for (const dir of targets) {
    await writeResults(dir, written, dir === SAVED);
    console.log(`Wrote ${names} to ${dir}/`);
  }
  if (!save) {
    console.log(
      `(the committed ones in ${SAVED}/ are unchanged: --save rewrites them)`,
    );
  }
  Deno.exit(0);
}

if (import.meta.main) await main();
