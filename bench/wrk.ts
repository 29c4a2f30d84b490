/**
 * The 2_4 scenario under `wrk` (when installed): one thread, N connections,
 * `Connection: close` so every connection carries one request. Parses wrk's
 * report into a LoadResult.
 *
 * One wrk quirk is handled in the open: wrk decides whether to reuse a
 * connection from the *response* headers only. A response without
 * `Connection: close` (the book's fixed bytes have none) makes wrk send a
 * second request on the socket the server already closed, which wrk then
 * counts as a read error, one per response. For such servers the read errors
 * up to the number of responses are reported as a note, not as errors; any
 * beyond that are errors.
 */

import type { LoadResult } from "./stats.ts";
import type { Phases } from "./load.ts";
import { HOST } from "./net.ts";
import { helper } from "./proc.ts";

/** Does `program` run? (`wrk` has no --version exit 0, so any start counts.) */
export function installed(program: string): boolean {
  try {
    new Deno.Command(program, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return true;
  } catch {
    return false;
  }
}

/** wrk's "1.23ms" / "456.00us" / "1.02s" in milliseconds. */
function toMs(value: string, unit: string): number {
  const n = Number(value);
  return unit === "us"
    ? n / 1000
    : unit === "ms"
    ? n
    : unit === "s"
    ? n * 1000
    : n * 60_000;
}

export interface WrkReport {
  requests: number;
  seconds: number;
  p50: number;
  p99: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
  non2xx: number;
}

export function parseWrk(output: string): WrkReport {
  const latency = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(
      output,
    );
    return m ? toMs(m[1], m[2]) : NaN;
  };
  const total = /(\d+) requests in ([\d.]+)(ms|s|m)/.exec(output);
  if (!total) throw new Error(`cannot read wrk's report:\n${output}`);
  const socket =
    /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/
      .exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  return {
    requests: Number(total[1]),
    seconds: toMs(total[2], total[3]) / 1000,
    p50: latency("50"),
    p99: latency("99"),
    connect: Number(socket?.[1] ?? 0),
    read: Number(socket?.[2] ?? 0),
    write: Number(socket?.[3] ?? 0),
    timeout: Number(socket?.[4] ?? 0),
    non2xx: Number(non2xx?.[1] ?? 0),
  };
}

/** wrk's command line; `pin` is e.g. ["taskset", "-c", "0"] or []. */
function wrkCommand(
  pin: string[],
  port: number,
  connections: number,
  seconds: number,
): string[] {
  return [
    ...pin,
    "wrk",
    "-t1",
    `-c${connections}`,
    `-d${seconds}s`,
    "--timeout",
    "5s",
    "--latency",
    "-H",
    "Connection: close",
    `http://${HOST}:${port}/`,
  ];
}

/** wrk's report, and its share of one core while it ran (where measured). */
interface WrkRun {
  output: string;
  cpuShare?: number;
}

/**
 * Runs wrk to its end; with `measureCpu` (and python3 installed), also its
 * share of one core over its `seconds`.
 */
async function runWrk(
  command: string[],
  seconds: number,
  measureCpu = false,
): Promise<WrkRun> {
  const measured = measureCpu && installed("python3");
  // bench/wrk_cpu.py runs wrk and prints the CPU seconds it used (see there).
  const argv = measured
    ? ["python3", helper("wrk_cpu.py"), ...command]
    : command;
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // wrk stops by itself after `seconds`; this is only the backstop.
  const backstop = setTimeout(
    () => child.kill("SIGKILL"),
    (seconds + 15) * 1000,
  );
  const { code, stdout, stderr } = await child.output();
  clearTimeout(backstop);
  const text = new TextDecoder().decode(stdout);
  const errors = new TextDecoder().decode(stderr);
  if (code !== 0) throw new Error(`wrk exited ${code}: ${errors}${text}`);
  const cpu = /^cpu-seconds ([\d.]+)$/m.exec(errors);
  return {
    output: text,
    cpuShare: cpu ? Number(cpu[1]) / seconds : undefined,
  };
}

/**
 * Runs the warm-up, then the timed wrk run. `closesWithoutHeader`: the
 * server's response has no `Connection: close` (see the header comment).
 */
export async function wrkLoad(
  pin: string[],
  port: number,
  connections: number,
  phases: Phases,
  closesWithoutHeader: boolean,
): Promise<LoadResult> {
  if (phases.warmup > 0) {
    await runWrk(
      wrkCommand(pin, port, connections, Math.ceil(phases.warmup)),
      phases.warmup,
    );
  }
  const { output, cpuShare: generatorCpu } = await runWrk(
    wrkCommand(pin, port, connections, phases.seconds),
    phases.seconds,
    true,
  );
  const report = parseWrk(output);
  const notes: string[] = [];
  let read = report.read;
  if (closesWithoutHeader) {
    const expected = Math.min(read, report.requests);
    read -= expected;
    notes.push(
      `wrk saw ${expected} closes after complete responses (no Connection: close), not errors`,
    );
  }
  return {
    count: report.requests,
    seconds: report.seconds,
    p50: report.p50,
    p99: report.p99,
    errors: {
      connect: report.connect,
      read,
      write: report.write,
      timeout: report.timeout,
      "non-2xx": report.non2xx,
    },
    notes: [...notes, "wrk latency excludes connect"],
    generatorCpu,
  };
}
