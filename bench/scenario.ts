/**
 * What a scenario is, for bench.ts and the scenario modules under
 * bench/scenarios/: which servers it runs (our recipe, the peers in
 * bench/peers/, a reader's `--vs` command, the book's script), how it checks
 * that a server answers correctly before timing it, and its loads, of two
 * kinds: timed loads (a rate over a window) and one held-open load (memory
 * per connection). Imports nothing of a scenario.
 */

import { bookSpec } from "./book.ts";
import type { HoldProtocol } from "./hold.ts";
import type { Phases } from "./load.ts";
import { recipeCommand, type Server, type ServerSpec } from "./servers.ts";
import type { LoadResult } from "./stats.ts";

/** A load timed over a window: a rate, latencies, fairness. */
export interface TimedLoad<C> {
  kind: "timed";
  /** "50 connections", "W = 8", ... */
  label: string;
  /** Who makes the load ("Deno generator", "wrk -t1 -c50", ...). */
  generator(): string;
  /** Warm-up, then the timed window; `checked` is what the check learned. */
  run(server: Server, checked: C, phases: Phases): Promise<LoadResult>;
}

/** The memory scenario: connections held open and weighed (bench/hold.ts). */
export interface HeldLoad<C> {
  kind: "held";
  /** Connections to hold (at most --held). */
  wanted: number;
  /** How this scenario serves and holds one connection. */
  protocol(server: Server, checked: C): HoldProtocol;
  /** A process per connection (2_1): wait for its handlers to settle. */
  processPerConnection?: boolean;
  /** What to say when the server exits while connections are opened. */
  exitNote?(server: Server): string | undefined;
}

export type Load<C> = TimedLoad<C> | HeldLoad<C>;

/**
 * Who runs beside our recipe: the peers (none asked), a reader's `--vs`
 * command instead of the peers, or the book's scripts from BOOK_DIR beside
 * the peers (`--vs=book`).
 */
export type Versus =
  | { kind: "peers" }
  | { kind: "command"; command: string[] }
  | { kind: "book"; dir: string | undefined };

/** One recipe's scenario; `C` is what its check learns for its loads. */
export interface Scenario<C = unknown> {
  id: string;
  title: string;
  unit: string;
  servers(versus: Versus): Promise<ServerSpec[]>;
  check(server: Server): Promise<C>;
  loads: Load<C>[];
}

/** The memory scenario's unit: the rate column holds KB, p50 the start time. */
export const MEMORY_UNIT = "KB per connection";

/** "10,000 held open" */
export function heldLabel(n: number): string {
  return `${n.toLocaleString("en-US")} held open`;
}

/** The peers' ready line (bench/peers/). */
export const PEER_READY = /Listening on 127\.0\.0\.1:(\d+)/;

/** Our recipe `file`, run as its own `deno task <id>` runs it, on a free port. */
export async function ours(
  id: string,
  file: string,
  extra: string[],
  ready: RegExp,
): Promise<ServerSpec> {
  return {
    label: `${id} (ours)`,
    kind: "ours",
    file,
    command: [...await recipeCommand(id, file), ...extra, "--port=0"],
    ready,
  };
}

/** Our server, then the others `versus` asks for beside it. */
export async function lineUp(
  id: string,
  ourServer: ServerSpec,
  peers: ServerSpec[],
  versus: Versus,
): Promise<ServerSpec[]> {
  if (versus.kind === "command") return [ourServer, vsSpec(versus.command)];
  if (versus.kind === "book") {
    return [ourServer, await bookSpec(id, versus.dir), ...peers];
  }
  return [ourServer, ...peers];
}

function vsSpec(vs: string[]): ServerSpec {
  const shown = vs.join(" ");
  return {
    label: `vs: ${shown.length > 48 ? shown.slice(0, 45) + "..." : shown}`,
    kind: "vs",
    command: vs,
  };
}
