/**
 * The network pieces every load generator and check shares: connecting with
 * a deadline, writing everything, reading to the close, and the watchdog that
 * ends whatever outlives its deadline. Every connection goes to 127.0.0.1.
 */

export const HOST = "127.0.0.1";
export const OP_TIMEOUT_MS = 5_000;
/**
 * How long a correctness check retries a refused connect: a `--vs` server
 * has no ready line we know, and a probe that connects and leaves would
 * crash the book's chat server (it blocks reading a name), so the check's own
 * first connect is the probe. A refused connect reaches no server.
 */
export const READY_MS = 15_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Closes (or aborts) whatever runs past its deadline. */
export class Watchdog {
  #deadlines = new Map<object, [number, () => void]>();
  #expired = new WeakSet<object>();
  #timer: ReturnType<typeof setInterval>;

  constructor(readonly timeoutMs = OP_TIMEOUT_MS) {
    this.#timer = setInterval(() => this.#sweep(), 100);
  }

  watch(key: object, cancel: () => void): void {
    this.#deadlines.set(key, [performance.now() + this.timeoutMs, cancel]);
  }

  done(key: object): void {
    this.#deadlines.delete(key);
  }

  /** Did the watchdog end this operation? */
  expired(key: object): boolean {
    return this.#expired.has(key);
  }

  #sweep(): void {
    const now = performance.now();
    for (const [key, [deadline, cancel]] of this.#deadlines) {
      if (now < deadline) continue;
      this.#deadlines.delete(key);
      this.#expired.add(key);
      try {
        cancel();
      } catch {
        // already closed
      }
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    for (const [, [, cancel]] of this.#deadlines) {
      try {
        cancel();
      } catch {
        // already closed
      }
    }
    this.#deadlines.clear();
  }
}

/**
 * Connects with a deadline enforced by the watchdog (an aborted connect);
 * while `retryRefusedMs` lasts, a refused connect is tried again.
 */
export async function connect(
  port: number,
  dog: Watchdog,
  retryRefusedMs = 0,
): Promise<Deno.TcpConn> {
  const giveUp = performance.now() + retryRefusedMs;
  while (true) {
    try {
      return await connectOnce(port, dog);
    } catch (error) {
      const refused = error instanceof Deno.errors.ConnectionRefused;
      if (!refused || performance.now() > giveUp) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function connectOnce(
  port: number,
  dog: Watchdog,
): Promise<Deno.TcpConn> {
  const abort = new AbortController();
  dog.watch(abort, () => abort.abort());
  try {
    const conn = await Deno.connect({
      hostname: HOST,
      port,
      signal: abort.signal,
    });
    conn.setNoDelay(true);
    return conn;
  } catch (error) {
    throw dog.expired(abort)
      ? new Deno.errors.TimedOut("connect timed out")
      : error;
  } finally {
    dog.done(abort);
  }
}

export async function writeAll(
  conn: Deno.Conn,
  data: Uint8Array,
): Promise<void> {
  while (data.length > 0) data = data.subarray(await conn.write(data));
}

/** Reads to the peer's close, at most `limit` bytes (more is a bad reply). */
export async function readToClose(
  conn: Deno.Conn,
  limit = 64 * 1024,
): Promise<Uint8Array> {
  const buffer = new Uint8Array(limit + 1);
  let length = 0;
  while (true) {
    const n = await conn.read(buffer.subarray(length));
    if (n === null) return buffer.subarray(0, length);
    length += n;
    if (length > limit) throw new BadReply(`more than ${limit} bytes`);
  }
}

export class BadReply extends Error {}

/**
 * One request, its whole reply (to the close), for the checks. With
 * `halfClose` the request is followed by our end of stream (the echo server
 * answers its lines and closes only when the client has finished).
 */
export async function exchange(
  port: number,
  request: string,
  halfClose = false,
): Promise<string> {
  const dog = new Watchdog();
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await connect(port, dog, READY_MS);
    const watched = conn;
    dog.watch(watched, () => watched.close());
    await writeAll(conn, encoder.encode(request));
    if (halfClose) await conn.closeWrite();
    return decoder.decode(await readToClose(conn));
  } catch (error) {
    const why = conn && dog.expired(conn)
      ? `no complete reply within ${OP_TIMEOUT_MS} ms`
      : `${(error as Error).name}: ${(error as Error).message}`;
    throw new Error(`check: ${why}`);
  } finally {
    if (conn) {
      dog.done(conn);
      if (!dog.expired(conn)) conn.close();
    }
    dog.stop();
  }
}
