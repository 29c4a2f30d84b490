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
 * the load generators (this process and wrk) on core 0. Writes a table to
 * stdout, and results.md and results.svg to --out (default: bench/out/,
 * which git ignores); only --save rewrites the committed bench/results.md
 * and bench/results.svg. An --out the task may not write to is refused
 * before anything runs, with the command that would work.
 *
 * The peers under bench/peers/ (a minimal Deno server, Node's http and net
 * servers) set the bar. `--vs=book` runs the book's own scripts from the
 * reader's BOOK_DIR beside ours and the peers, in every scenario they can
 * serve (bench/book.ts; the rows of those they cannot say why); `--vs` with a
 * command runs any other server through the scenario chosen with --only.
 *
 * The modules, from the command line down:
 *
 *     bench.ts        the command line, and measure(): one row per server and load
 *     scenarios.ts    the five scenarios: which servers, the correctness check, the loads
 *     servers.ts      starting a server (pinned), its ready line, stopping it
 *     book.ts         --vs=book: the book's scripts from BOOK_DIR, or why one is skipped
 *     load.ts         the Deno load generators: HTTP, line echo, a connection per message
 *     chat_load.ts    the 2_3 load (joins, one sender, W in flight), over chat_client.ts
 *     wrk.ts          the 2_4 load under wrk, and parsing its report
 *     memory.ts       the memory scenario: connections held open, a process tree's
 *                     PSS (/proc, read by python3), the open-file limit
 *     costs.ts        the mechanisms' floors: a Deno process, a Worker, fork(), a thread
 *     net.ts          connect, write all, read to the close, the watchdog
 *     stats.ts        LoadResult, latency samples, errors, fairness, the CPU meter
 *     machine.ts      the machine's description and the core pinning
 *     report.ts       the terminal table, results.md and the chart (results.svg)
 *     peers/          the peer servers (a minimal Deno server, Node http and net)
 *
 * Nothing here keeps state at module level: main() builds a Session that it
 * hands to measure(), and every result is a named type (Row, LoadResult,
 * HeldResult, Cost).
 */

import { parseArgs } from "@std/cli/parse-args";
import {
  chartSvg,
  formatFairness,
  formatKb,
  formatMs,
  formatRate,
  markdown,
  type Row,
  textTable,
} from "./report.ts";
import type { Phases } from "./load.ts";
import {
  type Checked,
  type Context,
  heldLabel,
  type Load,
  type Scenario,
  SCENARIO_IDS,
  scenarios,
  type Versus,
} from "./scenarios.ts";
import { bookDir } from "./book.ts";
import {
  MissingError,
  ROOT,
  Server,
  type ServerSpec,
  splitCommand,
} from "./servers.ts";
import { describeErrors, fairness, totalErrors } from "./stats.ts";
import { raiseOpenFiles } from "./memory.ts";
import { installed } from "./wrk.ts";
import { describeMachine, pin } from "./machine.ts";
import { measureCosts } from "./costs.ts";

/** Seconds of load before each timed window (--warmup). */
const WARMUP_SECONDS = "1";
const USAGE =
  "usage: bench.ts [-h] [--only NAMES] [--seconds N] [--warmup N] [--vs {book,COMMAND}] " +
  "[--vs-frame {pickle,json}] [--held N] [--out DIR] [--save] [--no-wrk]";
const HELP = `${USAGE}

Runs the chapter-2 recipes under load beside peer servers (and, with --vs=book,
the book's own scripts), holds connections open to weigh them, and writes
results.md and results.svg.

options:
  -h, --help          show this help message and exit
  --only NAMES        comma-separated scenarios: ${
  SCENARIO_IDS.join(", ")
} (default: all)
  --seconds N         timed seconds per run, 1-600 (default: 5), after the warm-up
  --warmup N          seconds of load before each timed run, 0-60 (default: ${WARMUP_SECONDS})
  --vs book           also run the book's scripts from $BOOK_DIR (2_1 to 2_4; 2_5 needs diesel, not on Python 3)
  --vs COMMAND        also run COMMAND (with {port} for its port) through the --only scenarios
  --vs-frame FORMAT   the chat frame a --vs COMMAND chat server speaks: pickle (the book's, default) or json
  --held N            at most N connections in the memory scenario (default: 10,000; 2,000 chat clients; 40 for 2_1/2_2)
  --out DIR           where results.md and results.svg go (default: bench/out, ignored by git)
  --save              also write them to bench/, replacing the committed results
  --no-wrk            use the Deno HTTP load generator even when wrk is installed`;
/** A generator at this share of its core or more is the limit, not the server. */
const LOAD_BOUND = 0.9;
/** Where a run writes by default: ignored by git, inside the task's --allow-write. */
const DEFAULT_OUT = "bench/out";
/** Where --save writes: the results committed with the repository. */
const SAVED = "bench";

function argumentError(message: string): never {
  console.error(`${USAGE}\nbench.ts: error: ${message}`);
  Deno.exit(2);
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const line = text.split("\n")[0];
  return line.length > 140 ? line.slice(0, 137) + "..." : line;
}

/** What one measure() gave: its row, and whether the server failed before it could be timed. */
interface Measured {
  row: Row;
  /** Missing, not starting, or failing its check: so for its other loads too. */
  untimed: boolean;
}

/** What main() decided once for every measure(), and the server running now (for Ctrl-C). */
interface Session {
  /** Prefix that pins a server, e.g. ["taskset", "-c", "1"]. */
  pin: string[];
  ctx: Context;
  phases: Phases;
  current?: Server;
}

/**
 * One row: start the server, check it, warm it up and time it under `load`,
 * stop it. Every load gets a fresh server, so one run cannot spoil the next.
 * Also says whether the server failed before it could be timed (missing, not
 * starting, or failing its check), which will not change for its next load.
 */
async function measure(
  session: Session,
  base: Row,
  scenario: Scenario,
  spec: ServerSpec,
  load: Load,
): Promise<Measured> {
  const { pin, ctx, phases } = session;
  const what = `   ${base.load} (${base.generator}):`;
  const began = performance.now();
  try {
    session.current = await Server.start(spec, pin);
  } catch (error) {
    const missing = error instanceof MissingError ||
      /NotFound|No such file/.test(String(error));
    const status = missing ? "missing" : "failed";
    console.log(`${what} ${status.toUpperCase()}: ${(error as Error).message}`);
    return { row: { ...base, status, note: firstLine(error) }, untimed: true };
  }
  const server = session.current;
  try {
    let checked: Checked;
    try {
      // A server that dies before answering fails at once, not at a timeout.
      const died = server.status.then((status) => {
        throw new Error(`the server exited (code ${status.code})`);
      });
      checked = await Promise.race([scenario.check(server), died]);
    } catch (error) {
      console.log(
        `${what} FAILED its correctness check: ${(error as Error).message}` +
          (server.tail ? `\n${server.tail}` : ""),
      );
      return {
        row: { ...base, status: "failed", note: firstLine(error) },
        untimed: true,
      };
    }
    console.log(
      `${what} answers correctly on port ${server.port}; ` +
        (load.unit
          ? "opening and holding connections ..."
          : `${phases.warmup} s warm-up + ${phases.seconds} s ...`),
    );
    const result = await load.run(server, ctx, checked, phases);
    const errors = totalErrors(result.errors);
    const notes = [...result.notes];
    if (errors > 0) notes.unshift(`errors: ${describeErrors(result.errors)}`);
    if (server.exited) notes.unshift("the server exited during the run");
    for (const [kind, example] of Object.entries(result.examples ?? {})) {
      console.log(`   first ${kind}: ${example}`);
    }
    if (result.held) {
      const { held } = result;
      notes.push(
        `${held.held.toLocaleString("en-US")} held${
          held.measure ? `, ${held.measure}` : ""
        }; p50 is connect to first reply`,
        ...held.notes,
      );
      console.log(
        `   -> ${formatKb(held.kbPerConnection)} ${base.unit} with ${
          held.held.toLocaleString("en-US")
        } held; a connection starts in ${formatMs(held.startMs)} ms` +
          `${notes.length ? ` (${notes.join("; ")})` : ""}`,
      );
      return {
        row: {
          ...base,
          rate: held.kbPerConnection,
          p50: held.startMs,
          held: held.held,
          errors,
          note: notes.join("; "),
        },
        untimed: false,
      };
    }
    const rate = result.count / result.seconds;
    const fair = fairness(result.perConnection);
    const loadCpu = result.generatorCpu;
    if (loadCpu !== undefined && loadCpu >= LOAD_BOUND) {
      notes.unshift(
        `load-bound: the generator used ${
          Math.round(loadCpu * 100)
        }% of its core`,
      );
    }
    console.log(
      `   -> ${formatRate(rate)} ${scenario.unit}, ` +
        `p50 ${formatMs(result.p50)} ms, p99 ${formatMs(result.p99)} ms, ` +
        (fair ? `fewest/most ${formatFairness(fair)} of the mean, ` : "") +
        (loadCpu !== undefined
          ? `generator CPU ${Math.round(loadCpu * 100)}%, `
          : "") +
        `${errors} errors${notes.length ? ` (${notes.join("; ")})` : ""}`,
    );
    const { p50, p99 } = result;
    const note = notes.join("; ");
    return {
      row: {
        ...base,
        rate,
        p50,
        p99,
        errors,
        note,
        fewest: fair?.fewest,
        most: fair?.most,
        loadCpu,
      },
      untimed: false,
    };
  } catch (error) {
    console.log(
      `   FAILED: ${(error as Error).message}` +
        (server.exited ? `\n${server.tail}` : ""),
    );
    return {
      row: { ...base, status: "failed", note: firstLine(error) },
      untimed: false,
    };
  } finally {
    const how = await server.stop();
    const took = ((performance.now() - began) / 1000).toFixed(1);
    console.log(
      `   ${how === "exit 0" ? "stopped" : `stopped: ${how}`} (${took} s)`,
    );
    session.current = undefined;
  }
}

/** A results folder the run cannot write: one line, exit 1. */
function cannotWrite(dir: string, error: unknown): never {
  const { message } = error as Error;
  console.error(`bench.ts: cannot write the results to ${dir}/: ${message}`);
  Deno.exit(1);
}

/**
 * Refuses, before the run, an output folder this process may not write:
 * `deno task bench` may write only under bench/, so for any other folder it
 * prints the command that grants it (the task's own line, with the folder
 * added to --allow-write) and exits 2. A folder it may write but cannot
 * create or write into exits 1, also before the run.
 */
async function assertWritable(dir: string): Promise<void> {
  const absolute = resolvePath(dir);
  const { state } = await Deno.permissions.query({
    name: "write",
    path: absolute,
  });
  if (state !== "granted") {
    argumentError(
      `argument --out: this run may not write to ${dir}; from the repository's folder, run\n  ${await commandWithWrite(
        absolute,
      )}`,
    );
  }
  const probe = `${absolute}/.bench-write-probe`;
  try {
    await Deno.mkdir(absolute, { recursive: true });
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  } catch (error) {
    cannotWrite(dir, error);
  }
}

/** `dir` made absolute against the current folder (the repository's, under `deno task`). */
function resolvePath(dir: string): string {
  if (dir.startsWith("/") || /^[A-Za-z]:[\\/]/.test(dir)) return dir;
  return `${Deno.cwd()}/${dir}`.replace(/\/(\.\/)+/g, "/");
}

/** This run's command line as `deno run` with `dir` added to the task's --allow-write. */
async function commandWithWrite(dir: string): Promise<string> {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  );
  const words = splitCommand(String(config.tasks?.bench ?? ""));
  const flags = words.slice(2, -1).map((w) =>
    w.startsWith("--allow-write=") ? `${w},${dir}` : w
  );
  if (!flags.some((w) => w.startsWith("--allow-write="))) {
    flags.push(`--allow-write=${dir}`);
  }
  const rest: string[] = [];
  for (let i = 0; i < Deno.args.length; i++) {
    if (Deno.args[i] === "--out") i++;
    else if (!Deno.args[i].startsWith("--out=")) rest.push(Deno.args[i]);
  }
  rest.push(`--out=${dir}`);
  const quote = (w: string) =>
    /^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", "'\\''")}'`;
  return ["deno", "run", ...flags, "bench/bench.ts", ...rest].map(quote)
    .join(" ");
}

/** A command word as the progress line shows it: a multi-line `python3 -c` script as "<script>". */
function shown(word: string): string {
  return word.includes("\n") ? "<wrapper script>" : word;
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["only", "seconds", "warmup", "vs", "vs-frame", "out", "held"],
    boolean: ["help", "no-wrk", "save"],
    alias: { h: "help" },
    default: {
      seconds: "5",
      warmup: WARMUP_SECONDS,
      out: DEFAULT_OUT,
      "vs-frame": "pickle",
    },
    unknown: (arg: string) => argumentError(`unrecognized arguments: ${arg}`),
  });
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  if (args._.length > 0) {
    argumentError(`unrecognized arguments: ${args._.join(" ")}`);
  }
  const seconds = Number(args.seconds);
  if (!/^\d+$/.test(args.seconds) || seconds < 1 || seconds > 600) {
    argumentError(
      `argument --seconds: expected a whole number from 1 to 600, got '${args.seconds}'`,
    );
  }
  const warmup = Number(args.warmup);
  if (!/^\d+$/.test(args.warmup) || warmup > 60) {
    argumentError(
      `argument --warmup: expected a whole number from 0 to 60, got '${args.warmup}'`,
    );
  }
  const held = args.held === undefined ? undefined : Number(args.held);
  if (
    held !== undefined &&
    (!/^\d+$/.test(String(args.held)) || held < 1 || held > 100_000)
  ) {
    argumentError(
      `argument --held: expected a whole number from 1 to 100000, got '${args.held}'`,
    );
  }
  const ids = args.only === undefined
    ? undefined
    : String(args.only).split(",").filter(Boolean);
  for (const id of ids ?? []) {
    if (!SCENARIO_IDS.includes(id)) {
      argumentError(
        `argument --only: invalid choice: '${id}' (choose from ${
          SCENARIO_IDS.join(", ")
        })`,
      );
    }
  }
  if (ids?.length === 0) {
    argumentError("argument --only: expected one or more scenario names");
  }
  const vs = args.vs === undefined || args.vs === "book"
    ? undefined
    : splitCommand(String(args.vs));
  const versus: Versus = args.vs === "book"
    ? { kind: "book", dir: bookDir() }
    : vs
    ? { kind: "command", command: vs }
    : { kind: "peers" };
  if (vs !== undefined) {
    if (vs.length === 0) argumentError("argument --vs: expected a command");
    if (!vs.some((w) => w.includes("{port}"))) {
      argumentError("argument --vs: the command must contain {port}");
    }
    if (!ids) {
      argumentError(
        "argument --vs: needs --only to say which scenario the other server speaks",
      );
    }
  }
  if (args["vs-frame"] !== "pickle" && args["vs-frame"] !== "json") {
    argumentError(
      `argument --vs-frame: invalid choice: '${
        args["vs-frame"]
      }' (choose from pickle, json)`,
    );
  }
  const out = String(args.out).replace(/\/+$/, "") || ".";
  const targets = args.save && out !== SAVED ? [out, SAVED] : [out];
  // Before anything runs: a folder the run may not write would only fail
  // after minutes of measuring.
  for (const dir of targets) await assertWritable(dir);

  const pinning = await pin(navigator.hardwareConcurrency);
  const useWrk = !args["no-wrk"] && installed("wrk");
  const machine = await describeMachine(pinning, seconds, warmup);
  const ctx: Context = { heldMax: held };
  const all = scenarios({
    wrkPrefix: useWrk ? pinning.load : undefined,
    vsFrame: args["vs-frame"],
  });
  // This process holds the memory scenario's client sockets and the servers
  // it starts inherit its limit: 10,000 connections need more than the
  // usual 1,024 descriptors.
  const files = await raiseOpenFiles(Math.min(held ?? 10_000, 10_000) + 1_000);
  const session: Session = {
    pin: pinning.server,
    ctx,
    phases: { warmup, seconds },
  };

  const interrupt = async () => {
    console.log("\nInterrupted: stopping the server under test...");
    await session.current?.stop();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", interrupt);

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

  const rows: Row[] = [];
  for (const scenario of all.filter((s) => !ids || ids.includes(s.id))) {
    console.log(`\n== ${scenario.title}`);
    for (const spec of await scenario.servers(versus)) {
      if (spec.skip) {
        console.log(`-- ${spec.label}: SKIPPED: ${spec.skip}`);
      } else {
        console.log(
          `-- ${spec.label}: ${
            [...pinning.server, ...spec.command.map(shown)].join(" ")
          }`,
        );
      }
      let giveUp: Row | undefined;
      for (const load of scenario.loads) {
        const base: Row = {
          scenario: scenario.id,
          title: scenario.title,
          unit: load.unit ?? scenario.unit,
          server: spec.label,
          kind: spec.kind,
          load: load.held
            ? heldLabel(Math.min(load.held, ctx.heldMax ?? load.held))
            : load.label,
          generator: load.generator(),
          status: "ok",
          note: "",
        };
        if (spec.skip) {
          rows.push({ ...base, status: "skipped", note: spec.skip });
          continue;
        }
        if (giveUp) {
          rows.push({ ...base, status: giveUp.status, note: giveUp.note });
          continue;
        }
        const { row, untimed } = await measure(
          session,
          base,
          scenario,
          spec,
          load,
        );
        rows.push(row);
        // Missing, not starting or failing its check: so for its other loads.
        if (untimed) giveUp = row;
      }
    }
  }

  console.log(`\n${textTable(rows)}\n`);
  const costs = rows.some((r) => r.scenario === "2_1" || r.scenario === "2_2")
    ? await measureCosts()
    : [];
  for (const cost of costs) {
    console.log(`${cost.what}: ${formatMs(cost.ms)} ms (${cost.note})`);
  }
  const md = markdown(rows, machine, costs);
  const svg = await chartSvg(rows, machine, costs);
  for (const dir of targets) {
    try {
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/results.md`, md);
      await Deno.writeTextFile(`${dir}/results.svg`, svg);
    } catch (error) {
      cannotWrite(dir, error);
    }
    console.log(`Wrote ${dir}/results.md and ${dir}/results.svg`);
  }
  if (!args.save) {
    console.log(
      `(${SAVED}/results.md and ${SAVED}/results.svg are unchanged: --save rewrites them)`,
    );
  }
  Deno.exit(0);
}
