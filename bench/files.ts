/**
 * Where a run's results go: --out (default bench/out/, which git ignores),
 * and with --save also bench/, replacing the committed results. A folder
 * the run may not write is refused before anything runs. --save keeps the
 * committed results.md's hand-measured section (see HAND_MEASURED).
 */

import { argumentError } from "./options.ts";
import { ROOT, splitCommand } from "./servers.ts";

/** Where --save writes: the results committed with the repository. */
export const SAVED = "bench";

/**
 * The line that opens results.md's hand-measured section: everything from it
 * to the end of the committed file (figures measured outside this run, such
 * as 2_5's fairness under the C load generator) is carried over by --save.
 */
export const HAND_MEASURED = "<!-- Measured by hand, kept by --save -->";

/** What one run writes, by file name. */
export type Results = Record<string, string>;

/**
 * `fresh` results.md with `old`'s hand-measured section (from the
 * HAND_MEASURED line to its end) after it; `fresh` alone when `old` has none.
 */
export function keepHandMeasured(
  fresh: string,
  old: string | undefined,
): string {
  const lines = (old ?? "").split("\n");
  const at = lines.indexOf(HAND_MEASURED);
  if (at < 0) return fresh;
  return `${fresh.trimEnd()}\n\n${lines.slice(at).join("\n")}`;
}

/** A results folder the run cannot write: one line, exit 1. */
function cannotWrite(dir: string, error: unknown): never {
  const { message } = error as Error;
  console.error(`bench.ts: cannot write the results to ${dir}/: ${message}`);
  Deno.exit(1);
}

/**
 * Writes `results` into `dir`. With `keep` (the committed results, --save),
 * results.md keeps its hand-measured section from the file it replaces.
 */
export async function writeResults(
  dir: string,
  results: Results,
  keep: boolean,
): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
    for (const [name, text] of Object.entries(results)) {
      const path = `${dir}/${name}`;
      const old = keep && name === "results.md"
        ? await Deno.readTextFile(path).catch(() => undefined)
        : undefined;
      await Deno.writeTextFile(path, keepHandMeasured(text, old));
    }
  } catch (error) {
    cannotWrite(dir, error);
  }
}

/**
 * Refuses, before the run, an output folder this process may not write:
 * `deno task bench` may write only under bench/, so for any other folder it
 * prints the command that grants it (the task's own line, with the folder
 * added to --allow-write) and exits 2. A folder it may write but cannot
 * create or write into exits 1, also before the run.
 */
export async function assertWritable(dir: string): Promise<void> {
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

/** The task's flags with `dir` added to --allow-write. */
async function taskFlags(dir: string): Promise<string[]> {
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
  return flags;
}

/** This run's command line as `deno run` with `dir` added to the task's --allow-write. */
async function commandWithWrite(dir: string): Promise<string> {
  const rest: string[] = [];
  for (let i = 0; i < Deno.args.length; i++) {
    if (Deno.args[i] === "--out") i++;
    else if (!Deno.args[i].startsWith("--out=")) rest.push(Deno.args[i]);
  }
  rest.push(`--out=${dir}`);
  const quote = (w: string) =>
    /^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", "'\\''")}'`;
  const flags = await taskFlags(dir);
  return ["deno", "run", ...flags, "bench/bench.ts", ...rest].map(quote)
    .join(" ");
}
