/**
 * What every timed load run reports, and the arithmetic shared by the
 * generators and the memory scenario: latency samples, percentiles, the
 * median, error counts by kind. Imports nothing of a scenario.
 */

import process from "node:process";

/** The outcome of one timed load run. */
export interface LoadResult {
  /** Completed operations inside the timed window. */
  count: number;
  /** Length of the timed window, in seconds. */
  seconds: number;
  /** Median and 99th percentile latency in milliseconds (NaN if none). */
  p50: number;
  p99: number;
  /** Errors by kind ("connect", "timeout", "reset", "bad reply", ...). */
  errors: Record<string, number>;
  /** Extra facts for the table's note column. */
  notes: string[];
  /** The first error message of each kind (printed, not tabled). */
  examples?: Record<string, string>;
  /** Replies (or deliveries) each connection got in the timed window, for fairness. */
  perConnection?: number[];
  /** The load generator's CPU time over the timed window, as a share of one core. */
  generatorCpu?: number;
}

/** The middle value (the upper one of the two middles for an even count); undefined for none. */
export function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Measures this process's CPU time (all its threads: user + system) from
 * now; the returned function gives the share of one core used since. This
 * process is the load generator, pinned to one core where taskset exists, so
 * a share near 1 means the generator, not the server, set the pace.
 */
export function cpuMeter(): () => number {
  const cpu = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };
  const cpu0 = cpu();
  const wall0 = performance.now();
  return () => {
    const wall = performance.now() - wall0;
    return wall > 0 ? (cpu() - cpu0) / wall : 0;
  };
}

/** The fewest and most per connection against the mean (undefined for one connection or none). */
export function fairness(
  perConnection: number[] | undefined,
): { fewest: number; most: number } | undefined {
  if (!perConnection || perConnection.length < 2) return undefined;
  const mean = perConnection.reduce((a, b) => a + b, 0) / perConnection.length;
  if (mean === 0) return undefined;
  return {
    fewest: Math.min(...perConnection) / mean,
    most: Math.max(...perConnection) / mean,
  };
}

export function totalErrors(errors: Record<string, number>): number {
  return Object.values(errors).reduce((sum, n) => sum + n, 0);
}

export function describeErrors(errors: Record<string, number>): string {
  return Object.entries(errors).filter(([, n]) => n > 0)
    .map(([kind, n]) => `${n} ${kind}`).join(", ");
}

/**
 * Latency samples in milliseconds, bounded: past `limit` samples it keeps a
 * uniform reservoir, so a long or fast run cannot grow memory without end.
 */
export class Samples {
  #values: Float64Array;
  #seen = 0;

  constructor(readonly limit = 2_000_000) {
    this.#values = new Float64Array(Math.min(limit, 65_536));
  }

  add(ms: number): void {
    const i = this.#seen++;
    if (i < this.limit) {
      if (i === this.#values.length) {
        const grown = new Float64Array(Math.min(this.limit, i * 2));
        grown.set(this.#values);
        this.#values = grown;
      }
      this.#values[i] = ms;
    } else {
      const j = Math.floor(Math.random() * (i + 1));
      if (j < this.limit) this.#values[j] = ms;
    }
  }

  get size(): number {
    return this.#seen;
  }

  /** The q-quantile (0..1) by the nearest-rank method; NaN when empty. */
  quantile(q: number): number {
    const n = Math.min(this.#seen, this.limit);
    if (n === 0) return NaN;
    const sorted = this.#values.slice(0, n).sort();
    return sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))];
  }
}

/** Counts errors by kind. */
export class ErrorCounter {
  readonly counts: Record<string, number> = {};
  /** The first message seen of each kind, for the progress output. */
  readonly examples: Record<string, string> = {};

  add(kind: string, n = 1, example?: string): void {
    this.counts[kind] = (this.counts[kind] ?? 0) + n;
    if (example && !(kind in this.examples)) this.examples[kind] = example;
  }
}

/** Sorts an error into a short kind for the table. */
export function errorKind(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) return "refused";
  if (error instanceof Deno.errors.ConnectionReset) return "reset";
  if (error instanceof Deno.errors.BrokenPipe) return "reset";
  if (error instanceof Deno.errors.ConnectionAborted) return "reset";
  if (error instanceof Deno.errors.TimedOut) return "timeout";
  if (error instanceof Deno.errors.BadResource) return "timeout";
  if (error instanceof Deno.errors.Interrupted) return "timeout";
  return "other";
}
