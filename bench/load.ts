/**
 * The Deno load generators: every one is closed-loop (a connection sends its
 * next request only after the last reply), runs a warm-up then a timed window,
 * is bounded in time and in operations, and talks only to 127.0.0.1.
 *
 * - `httpLoad`: one GET per connection (connect, request, read to the close).
 * - `echoLoad`: 64-byte lines on long-lived connections, one in flight each.
 * - `oneShotLoad`: connect, send, receive to the close (2_1 and 2_2).
 *
 * A stuck operation is ended by a watchdog that closes its connection (or
 * aborts its connect) at the deadline and counts a timeout.
 */

import {
  BadReply,
  connect,
  HOST,
  readToClose,
  Watchdog,
  writeAll,
} from "./net.ts";
import {
  cpuMeter,
  ErrorCounter,
  errorKind,
  type LoadResult,
  Samples,
} from "./stats.ts";

/** No load run does more operations than this, however fast the server. */
export const MAX_OPS = 20_000_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export interface Phases {
  /** Seconds of load before the timed window (not counted). */
  warmup: number;
  /** Seconds in the timed window. */
  seconds: number;
}

/**
 * The window of one run: warm-up until `start`, counted until `end`. It
 * also counts each connection's replies (for fairness) and the generator's
 * CPU over the window (timers at its start and end; a late timer only moves
 * both ends of the CPU measure, which divides by the wall time between).
 */
class Window {
  readonly start: number;
  readonly end: number;
  readonly samples = new Samples();
  readonly errors = new ErrorCounter();
  readonly perConnection: number[];
  count = 0;
  ops = 0;
  #cpu?: () => number;
  #cpuShare?: number;
  #timers: ReturnType<typeof setTimeout>[];

  constructor(phases: Phases, connections: number) {
    this.start = performance.now() + phases.warmup * 1000;
    this.end = this.start + phases.seconds * 1000;
    this.perConnection = new Array<number>(connections).fill(0);
    this.#timers = [
      setTimeout(() => this.#cpu = cpuMeter(), phases.warmup * 1000),
      setTimeout(
        () => this.#cpuShare = this.#cpu?.(),
        (phases.warmup + phases.seconds) * 1000,
      ),
    ];
  }

  get running(): boolean {
    return performance.now() < this.end && this.ops < MAX_OPS;
  }

  /** Counts an operation (of connection `index`) that started and ended inside the timed window. */
  record(
    began: number,
    error?: string,
    example?: string,
    index?: number,
  ): boolean {
    this.ops++;
    const ended = performance.now();
    if (began < this.start || ended > this.end) return false;
    if (error) this.errors.add(error, 1, example);
    else {
      this.count++;
      this.samples.add(ended - began);
      if (index !== undefined) this.perConnection[index]++;
    }
    return true;
  }

  result(seconds: number, notes: string[] = []): LoadResult {
    this.#timers.forEach(clearTimeout);
    return {
      perConnection: this.perConnection,
      generatorCpu: this.#cpuShare ?? this.#cpu?.(),
      count: this.count,
      seconds,
      p50: this.samples.quantile(0.5),
      p99: this.samples.quantile(0.99),
      errors: this.errors.counts,
      notes,
      examples: this.errors.examples,
    };
  }
}

function kindOf(
  error: unknown,
  dog: Watchdog,
  key: object | undefined,
): string {
  if (key && dog.expired(key)) return "timeout";
  if (error instanceof BadReply) return "bad reply";
  return errorKind(error);
}

/**
 * Connect, send `request`, read to the close, `check` the reply (it throws
 * BadReply or returns an error kind such as "non-2xx"), for `concurrency`
 * connections at a time. Latency includes the connect.
 */
async function connectionPerRequest(
  port: number,
  concurrency: number,
  phases: Phases,
  request: Uint8Array,
  check: (reply: Uint8Array) => string | undefined,
): Promise<LoadResult> {
  const window = new Window(phases, concurrency);
  const dog = new Watchdog();
  const worker = async (_: unknown, index: number) => {
    while (window.running) {
      const began = performance.now();
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await connect(port, dog);
        dog.watch(conn, () => conn!.close());
        await writeAll(conn, request);
        window.record(
          began,
          check(await readToClose(conn)),
          undefined,
          index,
        );
      } catch (error) {
        window.record(
          began,
          conn
            ? kindOf(error, dog, conn)
            : `connect ${kindOf(error, dog, undefined)}`,
          (error as Error).message,
        );
      } finally {
        if (conn) {
          dog.done(conn);
          if (!dog.expired(conn)) conn.close();
        }
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  dog.stop();
  return window.result(phases.seconds, ["latency includes connect"]);
}

/** The 2_4 scenario without wrk: one GET per connection. */
export function httpLoad(
  port: number,
  concurrency: number,
  phases: Phases,
  expectBody?: string,
): Promise<LoadResult> {
  const request = encoder.encode(
    `GET / HTTP/1.1\r\nHost: ${HOST}:${port}\r\nConnection: close\r\n\r\n`,
  );
  return connectionPerRequest(port, concurrency, phases, request, (reply) => {
    const text = decoder.decode(reply);
    const status = /^HTTP\/1\.[01] (\d{3}) /.exec(text);
    if (!status) throw new BadReply("no status line");
    if (!status[1].startsWith("2")) return "non-2xx";
    if (expectBody !== undefined && !text.endsWith(`\r\n\r\n${expectBody}`)) {
      throw new BadReply("wrong body");
    }
    return undefined;
  });
}

/**
 * The 2_1 / 2_2 scenario: the reply to `message` is `<handler id>: <message>`
 * (from the book's 2_2, `<thread name>: b'<message>'`, Python's repr of the
 * bytes, when `book` is set).
 */
export function oneShotLoad(
  port: number,
  concurrency: number,
  phases: Phases,
  book = false,
  message = "Hello echo server!",
): Promise<LoadResult> {
  const suffixes = book
    ? [`: ${message}`, `: b'${message}'`]
    : [`: ${message}`];
  return connectionPerRequest(
    port,
    concurrency,
    phases,
    encoder.encode(message),
    (reply) => {
      const text = decoder.decode(reply);
      const suffix = suffixes.find((s) => text.endsWith(s));
      if (!suffix || text.length <= suffix.length) {
        throw new BadReply(
          `unexpected reply ${JSON.stringify(text.slice(0, 80))}`,
        );
      }
      return undefined;
    },
  );
}

/**
 * The 2_5 scenario: `connections` long-lived connections, each sending a
 * 64-byte line and waiting for the line that ends with it ("You said: ...").
 */
export async function echoLoad(
  port: number,
  connections: number,
  phases: Phases,
): Promise<LoadResult> {
  const dog = new Watchdog();
  const line = encoder.encode("x".repeat(63) + "\n");
  const opened: Deno.TcpConn[] = [];
  const connectErrors = new ErrorCounter();
  for (let i = 0; i < connections; i += 100) {
    const batch = Array.from(
      { length: Math.min(100, connections - i) },
      () =>
        connect(port, dog).then((c) => void opened.push(c)).catch((error) =>
          connectErrors.add(`connect ${errorKind(error)}`)
        ),
    );
    await Promise.all(batch);
  }
  const window = new Window(phases, opened.length);
  for (const [kind, n] of Object.entries(connectErrors.counts)) {
    window.errors.add(kind, n);
  }
  const talk = async (conn: Deno.TcpConn, index: number) => {
    const reply = new Uint8Array(64 * 1024);
    try {
      while (window.running) {
        const began = performance.now();
        dog.watch(conn, () => conn.close());
        await writeAll(conn, line);
        let length = 0;
        while (length === 0 || reply[length - 1] !== 0x0a) {
          const n = await conn.read(reply.subarray(length));
          if (n === null) throw new BadReply("closed by the server");
          length += n;
          if (length === reply.length) throw new BadReply("reply too long");
        }
        dog.done(conn);
        if (
          !endsWith(reply.subarray(0, length), line) ||
          reply.indexOf(0x0a) !== length - 1
        ) {
          throw new BadReply("reply does not end with the line sent");
        }
        window.record(began, undefined, undefined, index);
      }
    } catch (error) {
      window.record(
        window.start,
        kindOf(error, dog, conn),
        (error as Error).message,
      );
    } finally {
      dog.done(conn);
      if (!dog.expired(conn)) conn.close();
    }
  };
  await Promise.all(opened.map(talk));
  dog.stop();
  return window.result(phases.seconds);
}

function endsWith(data: Uint8Array, suffix: Uint8Array): boolean {
  if (data.length < suffix.length) return false;
  const offset = data.length - suffix.length;
  for (let i = 0; i < suffix.length; i++) {
    if (data[offset + i] !== suffix[i]) return false;
  }
  return true;
}
