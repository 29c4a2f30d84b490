/**
 * The machine a run measures, for results.md, and the core pinning: where
 * `taskset` exists and there are two cores or more, this process (the Deno
 * load generator) and wrk run on core 0 and the servers on core 1, so a
 * server never competes with its load for a core.
 */

import os from "node:os";
import type { Machine } from "./report.ts";
import { installed } from "./wrk.ts";

export interface Pinning {
  /** Prefix for a server's command line, e.g. ["taskset", "-c", "1"]. */
  server: string[];
  /** Prefix for a load generator's command line (wrk). */
  load: string[];
  text: string;
}

/** The first line a program prints for `args` ("not installed" if it is absent). */
async function firstOutputLine(
  program: string,
  args: string[],
): Promise<string> {
  try {
    const { stdout, stderr } = await new Deno.Command(program, {
      args,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    const text = decoder.decode(stdout).trim() || decoder.decode(stderr).trim();
    return text.split("\n")[0];
  } catch {
    return "not installed";
  }
}

/** Pins this process to core 0 and says how to pin the servers to core 1. */
export async function pin(cores: number): Promise<Pinning> {
  const none = (why: string) => ({
    server: [],
    load: [],
    text: `Not pinned to cores: ${why}.`,
  });
  if (cores < 2) return none("fewer than 2 cores");
  if (!installed("taskset")) return none("taskset is not installed");
  const { code } = await new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", "0", String(Deno.pid)],
    stdout: "null",
    stderr: "null",
  }).output();
  if (code !== 0) return none("taskset could not pin this process");
  return {
    server: ["taskset", "-c", "1"],
    load: ["taskset", "-c", "0"],
    text:
      "Pinned with taskset: servers on core 1; load generators (this Deno process, wrk) on core 0.",
  };
}

export async function describeMachine(
  pinning: Pinning,
  seconds: number,
  warmup: number,
): Promise<Machine> {
  const wrk = await firstOutputLine("wrk", ["--version"]);
  return {
    date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    cores: navigator.hardwareConcurrency,
    cpu: os.cpus()[0]?.model ?? "unknown CPU",
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    node: await firstOutputLine("node", ["--version"]),
    wrk: wrk.replace(/^wrk\s+/, "").replace(/\s*Copyright.*$/, ""),
    pinning: pinning.text,
    seconds,
    warmup,
    command: ["deno task bench", ...Deno.args].join(" "),
  };
}
