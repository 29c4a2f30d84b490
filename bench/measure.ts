/**
 * One row of the table: start a server, check it, then take one of two
 * paths: a timed load (a rate over a window: `timedRow`) or the held-open
 * load (memory per connection: `heldRow`), then stop it. Every load gets a
 * fresh server, so one run cannot spoil the next.
 */

import { holdOpen } from "./hold.ts";
import type { Phases } from "./load.ts";
import { formatFairness, formatKb, formatMs, formatRate } from "./report.ts";
import type { Row } from "./report.ts";
import type { HeldLoad, Scenario, TimedLoad } from "./scenario.ts";
import { MissingError, Server, type ServerSpec } from "./servers.ts";
import {
  describeErrors,
  fairness,
  type LoadResult,
  totalErrors,
} from "./stats.ts";

/** A generator at this share of its core or more is the limit, not the server. */
const LOAD_BOUND = 0.9;

/** What main() decided once for every row, and the server running now (for Ctrl-C). */
export interface Session {
  /** Prefix that pins a server, e.g. ["taskset", "-c", "1"]. */
  pin: string[];
  /** `--held`: at most this many connections in the memory scenario. */
  heldMax?: number;
  phases: Phases;
  current?: Server;
}

/** What one row came to, and whether the server failed before it could be timed. */
export interface Measured {
  row: Row;
  /** Missing, not starting, or failing its check: so for its other loads too. */
  untimed: boolean;
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const line = text.split("\n")[0];
  return line.length > 140 ? line.slice(0, 137) + "..." : line;
}

/** The row of a server that could not be timed (`status` says why). */
function untimedRow(base: Row, status: Row["status"], error: unknown) {
  return { row: { ...base, status, note: firstLine(error) }, untimed: true };
}

/** The row's prefix on the progress lines: "   50 connections (wrk -t1 -c50):". */
function what(base: Row): string {
  return `   ${base.load} (${base.generator}):`;
}

/** Starts the server; a server that cannot start is "missing" or "failed". */
async function start(
  session: Session,
  base: Row,
  spec: ServerSpec,
): Promise<Server | Measured> {
  try {
    return session.current = await Server.start(spec, session.pin);
  } catch (error) {
    const missing = error instanceof MissingError ||
      /NotFound|No such file/.test(String(error));
    const status = missing ? "missing" : "failed";
    const { message } = error as Error;
    console.log(`${what(base)} ${status.toUpperCase()}: ${message}`);
    return untimedRow(base, status, error);
  }
}

/** The scenario's check; a server that dies before answering fails at once, not at a timeout. */
async function check<C>(
  scenario: Scenario<C>,
  server: Server,
  base: Row,
): Promise<{ checked: C } | Measured> {
  try {
    const died = server.status.then((status) => {
      throw new Error(`the server exited (code ${status.code})`);
    });
    return { checked: await Promise.race([scenario.check(server), died]) };
  } catch (error) {
    console.log(
      `${what(base)} FAILED its correctness check: ${
        (error as Error).message
      }` +
        (server.tail ? `\n${server.tail}` : ""),
    );
    return untimedRow(base, "failed", error);
  }
}

/** The notes every row starts with: its errors and whether the server died. */
function firstNotes(server: Server, errors: Record<string, number>): string[] {
  const notes: string[] = [];
  if (server.exited) notes.push("the server exited during the run");
  if (totalErrors(errors) > 0) notes.push(`errors: ${describeErrors(errors)}`);
  return notes;
}

function noteText(notes: string[]): string {
  return notes.length ? ` (${notes.join("; ")})` : "";
}

/** The timed path: warm-up, the timed window, a rate and latencies. */
export async function timedRow<C>(
  server: Server,
  base: Row,
  load: TimedLoad<C>,
  checked: C,
  phases: Phases,
): Promise<Row> {
  const result = await load.run(server, checked, phases);
  printExamples(result);
  const notes = [...firstNotes(server, result.errors), ...result.notes];
  const rate = result.count / result.seconds;
  const fair = fairness(result.perConnection);
  const loadCpu = result.generatorCpu;
  // Judged on the whole percent the table shows, so that a row reading 90%
  // always carries the note (0.896 would round to 90 but miss 0.9).
  const share = loadCpu === undefined ? undefined : Math.round(loadCpu * 100);
  if (share !== undefined && share >= LOAD_BOUND * 100) {
    notes.unshift(`load-bound: the generator used ${share}% of its core`);
  }
  const errors = totalErrors(result.errors);
  console.log(
    `   -> ${formatRate(rate)} ${base.unit}, ` +
      `p50 ${formatMs(result.p50)} ms, p99 ${formatMs(result.p99)} ms, ` +
      (fair ? `fewest/most ${formatFairness(fair)} of the mean, ` : "") +
      (loadCpu !== undefined
        ? `generator CPU ${Math.round(loadCpu * 100)}%, `
        : "") +
      `${errors} errors${noteText(notes)}`,
  );
  const { p50, p99 } = result;
  const { fewest, most } = fair ?? {};
  const note = notes.join("; ");
  return { ...base, rate, p50, p99, errors, note, fewest, most, loadCpu };
}

function printExamples(result: LoadResult): void {
  for (const [kind, example] of Object.entries(result.examples ?? {})) {
    console.log(`   first ${kind}: ${example}`);
  }
}

/** The held-open path: connections held, the server weighed (bench/hold.ts). */
export async function heldRow<C>(
  server: Server,
  base: Row,
  load: HeldLoad<C>,
  checked: C,
  heldMax: number | undefined,
): Promise<Row> {
  const wanted = Math.min(load.wanted, heldMax ?? load.wanted);
  const held = await holdOpen(
    {
      pid: server.child.pid,
      port: server.port,
      exited: () => server.exited,
      exitNote: load.exitNote?.(server),
      processPerConnection: load.processPerConnection,
    },
    wanted,
    load.protocol(server, checked),
  );
  const count = held.held.toLocaleString("en-US");
  const notes = [
    ...firstNotes(server, {}),
    `${count} held${held.measure ? `, ${held.measure}` : ""}; ` +
    "p50 is connect to first reply",
    ...held.notes,
  ];
  console.log(
    `   -> ${
      formatKb(held.kbPerConnection)
    } ${base.unit} with ${count} held; ` +
      `a connection starts in ${formatMs(held.startMs)} ms${noteText(notes)}`,
  );
  return {
    ...base,
    rate: held.kbPerConnection,
    p50: held.startMs,
    held: held.held,
    errors: 0,
    note: notes.join("; "),
  };
}

/**
 * One row: start the server, check it, take the load's path, stop the
 * server. Says whether the server failed before it could be timed (missing,
 * not starting, or failing its check), which will not change for its next
 * load.
 */
export async function measure<C>(
  session: Session,
  base: Row,
  scenario: Scenario<C>,
  spec: ServerSpec,
  load: TimedLoad<C> | HeldLoad<C>,
): Promise<Measured> {
  const began = performance.now();
  const server = await start(session, base, spec);
  if (!(server instanceof Server)) return server;
  try {
    const checked = await check(scenario, server, base);
    if (!("checked" in checked)) return checked;
    const { phases } = session;
    console.log(
      `${what(base)} answers correctly on port ${server.port}; ` +
        (load.kind === "held"
          ? "opening and holding connections ..."
          : `${phases.warmup} s warm-up + ${phases.seconds} s ...`),
    );
    const row = load.kind === "held"
      ? await heldRow(server, base, load, checked.checked, session.heldMax)
      : await timedRow(server, base, load, checked.checked, phases);
    return { row, untimed: false };
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
