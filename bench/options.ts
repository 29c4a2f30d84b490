/**
 * `deno task bench`'s command line: the options, their checks (a bad one
 * prints the usage and one error line and exits 2, as Python's argparse
 * does), and the help text.
 */

import { parseArgs } from "@std/cli/parse-args";
import { bookDir } from "./book.ts";
import type { Versus } from "./scenario.ts";
import { splitCommand } from "./servers.ts";

/** Seconds of load before each timed window (--warmup). */
const WARMUP_SECONDS = "1";
/** Where a run writes by default: ignored by git, inside the task's --allow-write. */
export const DEFAULT_OUT = "bench/out";

export const USAGE =
  "usage: bench.ts [-h] [--only NAMES] [--seconds N] [--warmup N] [--vs {book,COMMAND}] " +
  "[--vs-frame {pickle,json}] [--held N] [--out DIR] [--save] [--no-wrk]";

function help(ids: string[]): string {
  return `${USAGE}

Runs the chapter-2 recipes under load beside peer servers (and, with --vs=book,
the book's own scripts), holds connections open to weigh them, and writes
results.md, results.svg and results.ko.svg.

options:
  -h, --help          show this help message and exit
  --only NAMES        comma-separated scenarios: ${
    ids.join(", ")
  } (default: all)
  --seconds N         timed seconds per run, 1-600 (default: 5), after the warm-up
  --warmup N          seconds of load before each timed run, 0-60 (default: ${WARMUP_SECONDS})
  --vs book           also run the book's scripts from $BOOK_DIR (2_1 to 2_4; 2_5 needs diesel, not on Python 3)
  --vs COMMAND        also run COMMAND (with {port} for its port) through the --only scenarios
  --vs-frame FORMAT   the chat frame a --vs COMMAND chat server speaks: pickle (the book's, default) or json
  --held N            at most N connections in the memory scenario (default: 10,000; 2,000 chat clients; 40 for 2_1/2_2)
  --out DIR           where results.md and the charts go (default: bench/out, ignored by git)
  --save              also write them to bench/, replacing the committed results
  --no-wrk            use the Deno HTTP load generator even when wrk is installed`;
}

/** The run the command line asks for. */
export interface Options {
  /** The scenarios to run (undefined: all). */
  only?: string[];
  seconds: number;
  warmup: number;
  held?: number;
  versus: Versus;
  vsFrame: "pickle" | "json";
  out: string;
  save: boolean;
  wrk: boolean;
}

export function argumentError(message: string): never {
  console.error(`${USAGE}\nbench.ts: error: ${message}`);
  Deno.exit(2);
}

/** A whole number from `low` to `high`, or the usage and exit 2. */
function wholeNumber(
  name: string,
  text: string,
  low: number,
  high: number,
): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < low || n > high) {
    argumentError(
      `argument --${name}: expected a whole number from ${low} to ${high}, got '${text}'`,
    );
  }
  return n;
}

/** --only's scenarios, each one of `ids`. */
function onlyIds(only: string | undefined, ids: string[]) {
  if (only === undefined) return undefined;
  const chosen = only.split(",").filter(Boolean);
  for (const id of chosen) {
    if (!ids.includes(id)) {
      argumentError(
        `argument --only: invalid choice: '${id}' (choose from ${
          ids.join(", ")
        })`,
      );
    }
  }
  if (chosen.length === 0) {
    argumentError("argument --only: expected one or more scenario names");
  }
  return chosen;
}

/** --vs: the book, a command (with {port}, and --only to say its scenario), or the peers alone. */
function versusOf(vs: string | undefined, only: string[] | undefined): Versus {
  if (vs === undefined) return { kind: "peers" };
  if (vs === "book") return { kind: "book", dir: bookDir() };
  const command = splitCommand(vs);
  if (command.length === 0) argumentError("argument --vs: expected a command");
  if (!command.some((w) => w.includes("{port}"))) {
    argumentError("argument --vs: the command must contain {port}");
  }
  if (!only) {
    argumentError(
      "argument --vs: needs --only to say which scenario the other server speaks",
    );
  }
  return { kind: "command", command };
}

function frameOf(frame: string): "pickle" | "json" {
  if (frame === "pickle" || frame === "json") return frame;
  argumentError(
    `argument --vs-frame: invalid choice: '${frame}' (choose from pickle, json)`,
  );
}

/** Parses `args`; --help prints the help and exits 0, a bad option exits 2. */
export function parseOptions(args: string[], ids: string[]): Options {
  const parsed = parseArgs(args, {
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
  if (parsed.help) {
    console.log(help(ids));
    Deno.exit(0);
  }
  if (parsed._.length > 0) {
    argumentError(`unrecognized arguments: ${parsed._.join(" ")}`);
  }
  const only = onlyIds(parsed.only, ids);
  return {
    only,
    seconds: wholeNumber("seconds", parsed.seconds, 1, 600),
    warmup: wholeNumber("warmup", parsed.warmup, 0, 60),
    held: parsed.held === undefined
      ? undefined
      : wholeNumber("held", String(parsed.held), 1, 100_000),
    versus: versusOf(parsed.vs, only),
    vsFrame: frameOf(parsed["vs-frame"]),
    out: String(parsed.out).replace(/\/+$/, "") || ".",
    save: parsed.save,
    wrk: !parsed["no-wrk"],
  };
}
