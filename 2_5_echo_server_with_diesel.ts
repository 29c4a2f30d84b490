/**
 * Recipe 2_5: "Multiplexing an echo server using the Diesel concurrent library"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * Run it, then type lines in a second terminal and read them back:
 *
 *     deno task 2_5 --port=8800     # --host=::1 for IPv6; --trace: each line read and written
 *     nc localhost 8800             # or telnet localhost 8800 (quit: Ctrl-], then quit)
 *
 * From Python to Deno: diesel gave Python 2 a handler that reads like
 * blocking code (`until_eol()`, then `send()`) while one event loop served
 * every client. An `async` function is that in Deno: each `await` hands the
 * loop to the other clients. `EchoServer.handler` keeps the book's loop line
 * for line, and `serve()`, which `main()` calls, starts one handler per
 * connection without awaiting it. Below the book's flow come the part of diesel the handler needs
 * (`DieselConnection`) and the reply buffers it shares, fair turns under
 * overload, bounds and shutdown, tracing and the command line. The book's script no longer runs: diesel is
 * Python 2 only.
 *
 * Fixed from the book:
 * - A disconnect ends that client's handler with one line (the book looped forever).
 * - "\n" and "\r\n" both end a line; the reply keeps the client's bytes and terminator.
 * - A last line without a terminator before the client's EOF is still answered.
 * - A line is bounded (64 KiB: an error line, then a close), and so is the wait for its end.
 * - Ctrl-C or SIGTERM: one shutdown line, every client closed, exit 0.
 * - Under overload every connection gets its turn (Deno's reads alone starve some).
 */

// book: import diesel
// diesel's until_eol() and send() are DieselConnection's, below the book's flow.
// book: import argparse
// argparse becomes std's parseArgs, in parseArguments() below.
import { parseArgs } from "@std/cli/parse-args";
import { delay } from "@std/async/delay";

// book: class EchoServer(object):
export class EchoServer {
  /** Every open connection and its reader, so that shutdown and the line sweep can close them. */
  readonly connections = new Map<Deno.TcpConn, DieselConnection>();
  /** Not in the book: whose read goes next under overload (see `Turns`). */
  readonly turns = new Turns();
  /** Connections the sweep closed for a late line, for their farewell. */
  readonly #late = new Set<Deno.TcpConn>();
  #sweeper?: ReturnType<typeof setInterval>;
  /** Set by shutdown: a handler's read or write that fails now was closed by it. */
  shuttingDown = false;
  /**
   * A promise and the function that resolves it, made together
   * (`Promise.withResolvers`): the last handler to end resolves it, and
   * `main()` awaits it.
   */
  readonly #allEnded = Promise.withResolvers<void>();

  /**
   * `trace`, when given (`--trace`), gets one line per line read and per
   * reply written. When it is not, each `this.trace?.(...)` below stops at
   * the `?.`, before its message is built: tracing off costs nothing.
   */
  constructor(
    readonly trace?: (line: string) => void,
    readonly lineTimeoutMs = LINE_TIMEOUT_S * 1000,
  ) {}

  // book: def handler(self, remote_addr):
  async handler(conn: Deno.TcpConn): Promise<void> {
    // book: host, port = remote_addr[0], remote_addr[1]
    const { hostname: host, port } = conn.remoteAddr;
    // book: print ("Echo client connected from: %s:%d" %(host, port))
    const who = hostPort(host, port); // [::1]:port for IPv6
    console.log(`Echo client connected from: ${who}`);
    const client = new DieselConnection(conn, this.turns);
    this.connections.set(conn, client);
    let farewell = "disconnected";
    try {
      // book: while True:
      while (true) {
        // book: try:
        // The try is around the whole loop (see the catch below).
        // book: message = diesel.until_eol()
        const message = await client.untilEol();
        if (message === null) {
          this.trace?.(`${who}: until_eol() found the end`);
          break;
        }
        this.trace?.(
          `${who}: until_eol() read ${plural(message.length, "byte")} ` +
            preview(message),
        );
        // book: your_message = ': '.join(['You said', message])
        // book: diesel.send(your_message)
        await client.send(YOU_SAID, message);
        const size = YOU_SAID.length + message.length;
        this.trace?.(
          `${who}: send() wrote ${plural(size, "byte")} ` +
            preview(YOU_SAID, message),
        );
      }
      // book: except Exception as e:
      // book: print ("Exception:",e)
      // The book's loop printed the exception and tried again, for ever. Here
      // the handler ends, and the line below says why (farewell()).
    } catch (error) {
      // The farewell's reads and writes are not the book's loop: they take
      // no turn, and this connection's turn goes to the next in line now.
      client.endTurn();
      farewell = await this.farewell(error as Error, client);
    } finally {
      client.close();
    }
    console.log(`Echo client ${who} ${farewell}`);
    this.connections.delete(conn);
    this.#late.delete(conn);
    if (this.shuttingDown && this.connections.size === 0) {
      this.#allEnded.resolve();
    }
  }

  /**
   * Not in the book: why a handler ended, for its last line. A client with
   * a line too long is told so, then disconnected (lingering first).
   */
  async farewell(error: Error, client: DieselConnection): Promise<string> {
    if (this.shuttingDown) {
      // Closing a connection under a pending read rejects it (Interrupted
      // or BadResource): that is the shutdown, not the client's fault.
      return "closed by server shutdown";
    }
    if (this.#late.has(client.conn as Deno.TcpConn)) {
      const seconds = this.lineTimeoutMs / 1000;
      return `sent no end of line within ${seconds} s, disconnected`;
    }
    if (error instanceof LineTooLongError) {
      try {
        await client.send(LINE_TOO_LONG);
        await client.linger();
      } catch {
        // The client left first: nothing more to tell it.
      }
      return `sent a line over ${MAX_LINE_BYTES} bytes, disconnected`;
    }
    return `dropped (${error.name}: ${error.message})`;
  }

  /**
   * Not in the book: one timer for every connection (a timer per line would
   * cost a timer per read) closes a connection whose partial line has waited
   * longer than lineTimeoutMs for its end; its pending read then fails.
   */
  startSweep(): void {
    this.#sweeper = setInterval(() => {
      const oldest = Date.now() - this.lineTimeoutMs;
      for (const [conn, client] of this.connections) {
        if (client.partialSince !== undefined && client.partialSince < oldest) {
          this.#late.add(conn);
          closeQuietly(conn);
        }
      }
    }, Math.min(this.lineTimeoutMs / 4, 1000)); // a close is at most 1/4 late
  }

  /** Shutdown: no more sweeps. */
  stopSweep(): void {
    clearInterval(this.#sweeper);
  }

  /** After shutdown: resolves once every handler has printed its farewell. */
  allEnded(): Promise<void> {
    if (this.connections.size === 0) this.#allEnded.resolve();
    return this.#allEnded.promise;
  }
}

// book: def main(server_port):
export async function main(
  port: number,
  host?: string,
  trace?: (line: string) => void,
  lineTimeoutMs = LINE_TIMEOUT_S * 1000,
): Promise<void> {
  // book: app = diesel.Application()
  // diesel's Application was its event loop. Deno's runs every script: there
  // is nothing to make.
  // book: server = EchoServer()
  const server = new EchoServer(trace, lineTimeoutMs);
  // book: app.add_service(diesel.Service(server.handler, server_port))
  // A service is a listening socket whose connections each get a handler:
  // listen here, accept in serve().
  const listener = listenOrExit(host, port);
  server.startSweep();
  shutDownOnSignals(server, listener);
  // book: app.run()
  console.log(
    `Listening on ${hostPort(listener.addr.hostname, listener.addr.port)}`,
  );
  await serve(server, listener);
  await server.allEnded();
}

// --- Not in the book: diesel's until_eol() and send() ---

const YOU_SAID = new TextEncoder().encode("You said: ");
const MAX_LINE_BYTES = 64 * 1024;
/** An idle connection's read buffer: a pending read holds it until data comes. */
const IDLE_READ_BYTES = 256;

class LineTooLongError extends Error {}

/** What `lineEnd()` found in the bytes read so far. */
export type LineScan =
  | { kind: "line"; end: number } // a line: pending[0, end), "\n" included
  | { kind: "partial" } // no "\n" yet: read more
  | { kind: "too long" }; // over maxLine bytes, terminator not counted

/**
 * diesel's `until_eol()` framing, apart from any I/O: where the first line
 * of `pending` ends. A line ends with "\n" ("\r\n" from telnet ends in it
 * too); its length, not counting "\n" or "\r\n", must not pass `maxLine`.
 * `searchFrom` skips bytes already known to hold no "\n".
 */
export function lineEnd(
  pending: Uint8Array,
  maxLine = MAX_LINE_BYTES,
  searchFrom = 0,
): LineScan {
  const newline = pending.indexOf(0x0a, searchFrom);
  // Without a "\n" yet, a "\r" at the end may be the first half of a "\r\n".
  const length = newline < 0 ? pending.length : newline;
  const terminatorPart = pending[length - 1] === 0x0d ? 1 : 0;
  if (length - terminatorPart > maxLine) return { kind: "too long" };
  if (newline < 0) return { kind: "partial" };
  return { kind: "line", end: newline + 1 };
}

/**
 * What diesel gave a handler: `until_eol()` and `send()` on the current
 * connection. Only this class buffers, so only it needs bounding.
 */
export class DieselConnection {
  // The read buffer: [start, end) is read, not taken yet. It is small while
  // the connection is idle, since a pending read holds it; it doubles when a
  // read fills it (a long line, or a client sending fast) and goes back to
  // IDLE_READ_BYTES once everything read was taken and the last read came
  // back short (the client had nothing more to send for now).
  #buffer = new Uint8Array(IDLE_READ_BYTES);
  #start = 0;
  #end = 0;
  #eof = false;
  #lastReadFilled = false;
  /**
   * Not in diesel: when the line now waiting for its end began to arrive
   * (Date.now()), or undefined while no partial line is held. The server's
   * sweep closes a connection whose line is late.
   */
  partialSince: number | undefined;

  /** Not in diesel: reads and writes completed so far (see `Turns`). */
  progress = 0;
  /** Not in diesel: whether a read is pending now (see `Turns`). */
  reading = false;

  /** `turns`, when given, makes each read wait for a turn (see `Turns`). */
  constructor(readonly conn: Deno.Conn, readonly turns?: Turns) {}

  /**
   * diesel's `until_eol()`. The next line with its terminator ("\n" or
   * "\r\n"); at EOF the last unterminated bytes, then null. The line is a
   * view into the read buffer: use it before the next call.
   */
  async untilEol(): Promise<Uint8Array | null> {
    let searchFrom = 0;
    while (true) {
      const pending = this.#buffer.subarray(this.#start, this.#end);
      const scan = lineEnd(pending, MAX_LINE_BYTES, searchFrom);
      if (scan.kind === "too long") throw new LineTooLongError();
      if (scan.kind === "line" || this.#eof) {
        let line: Uint8Array;
        if (scan.kind === "line") {
          line = pending.subarray(0, scan.end);
        } else {
          line = pending; // EOF: the last bytes, even without a terminator
        }
        this.#start += line.length;
        this.partialSince = undefined;
        if (line.length === 0) return null;
        return line;
      }
      searchFrom = pending.length;
      // A partial line's clock starts at its first bytes, not at each read.
      if (pending.length > 0 && this.partialSince === undefined) {
        this.partialSince = Date.now();
      }
      this.#makeRoom();
      // `conn.read(buffer)` resolves with how many bytes it put into
      // `buffer`, or null at the client's EOF. While it waits, the event
      // loop serves everyone else, and the pending read holds on to
      // `buffer`: that is why an idle connection's buffer is kept small.
      const space = this.#buffer.subarray(this.#end);
      const turn = this.#nextTurn();
      if (turn !== undefined) await turn;
      this.reading = true;
      const n = await this.conn.read(space);
      this.reading = false;
      this.progress++;
      this.turns?.countRead();
      if (n === null) {
        this.#eof = true;
      } else {
        this.#end += n;
      }
      this.#lastReadFilled = n === space.length;
    }
  }

  /**
   * Not in diesel: each read is a turn. The turn this connection held ended
   * when the replies to its last read were written (the handler asks for the
   * next line only then), so it is given back, and the next read waits for
   * a turn of its own: undefined when it has one at once (no `await`, so no
   * extra step on the way to every read), else a promise of it. Without
   * `turns`, every read goes at once.
   */
  #nextTurn(): Promise<void> | undefined {
    if (this.turns === undefined) return undefined;
    this.turns.giveBack(this);
    return this.turns.take(this);
  }

  /** Not in diesel: this connection's turn, if it holds one, goes to the next in line. */
  endTurn(): void {
    this.turns?.giveBack(this);
  }

  /** The handler's end: its turn goes, and so does the connection. */
  close(): void {
    this.endTurn();
    closeQuietly(this.conn);
  }

  /** Room to read into: at the end of the buffer, which grows or shrinks. */
  #makeRoom(): void {
    if (this.#start === this.#end) {
      // Everything read was taken: start again at the front.
      this.#start = 0;
      this.#end = 0;
      if (this.#buffer.length > IDLE_READ_BYTES && !this.#lastReadFilled) {
        this.#buffer = new Uint8Array(IDLE_READ_BYTES); // give the rest back
      }
    }
    if (this.#end === this.#buffer.length) {
      // Full: move the partial line to the front. Only a partial line that
      // takes up over half the buffer makes it grow (to twice the size), so
      // MAX_LINE_BYTES bounds the growth: untilEol() throws on a line too
      // long before a buffer of 2 * MAX_LINE_BYTES would have to grow again.
      const pending = this.#buffer.subarray(this.#start, this.#end);
      if (pending.length > this.#buffer.length / 2) {
        const grown = new Uint8Array(this.#buffer.length * 2);
        grown.set(pending);
        this.#buffer = grown;
      } else {
        this.#buffer.copyWithin(0, this.#start, this.#end);
      }
      this.#start = 0;
      this.#end = pending.length;
    }
  }

  /**
   * Not in diesel or the book (they had no bound on a line to enforce).
   * Before closing on a client that is still sending: shut down writing,
   * then drop what it sends (up to LINGER_BYTES, for LINGER_MS), since
   * closing with unread bytes sends a reset that can destroy our last words.
   */
  async linger(): Promise<void> {
    // `closeWrite()` is shutdown(SHUT_WR): the client sees the end of our
    // data after the error line, while we can still read what it sends.
    await this.conn.closeWrite();
    // A client that never stops sending is cut off when the time is up:
    // closing the connection makes the pending read reject.
    const timer = setTimeout(() => closeQuietly(this.conn), LINGER_MS);
    try {
      let left = LINGER_BYTES;
      while (left > 0) {
        const n = await this.conn.read(this.#buffer);
        if (n === null) break;
        left -= n;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * diesel's `send(your_message)`. Writes the parts as one buffer, so
   * that the reply leaves in one write (one packet for a short line). The
   * buffer is borrowed from `replyPool` (a reply over REPLY_BUFFER_BYTES gets
   * one of its own) and given back when the write is done.
   */
  async send(...parts: Uint8Array[]): Promise<void> {
    let size = 0;
    for (const part of parts) size += part.length;
    const pooled = size <= REPLY_BUFFER_BYTES;
    let buffer: Uint8Array;
    if (pooled) {
      buffer = replyPool.pop() ?? new Uint8Array(REPLY_BUFFER_BYTES);
    } else {
      buffer = new Uint8Array(size);
    }
    try {
      let length = 0;
      for (const part of parts) {
        buffer.set(part, length);
        length += part.length;
      }
      // `conn.write()` may take only part of what it is given (when the
      // kernel's send buffer is full) and resolves with how much it took:
      // write the rest until every byte is gone.
      let data = buffer.subarray(0, length);
      while (data.length > 0) {
        const written = await this.conn.write(data);
        this.progress++;
        data = data.subarray(written);
      }
    } finally {
      // A write that settled (done or failed) no longer holds the buffer.
      if (pooled && replyPool.length < REPLY_POOL_SIZE) replyPool.push(buffer);
    }
  }
}

/**
 * Closes a connection, ignoring "already closed": the shutdown, the line
 * sweep and the handler's own end may each be first to close it.
 */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

// --- Not in the book: reply buffers from a shared pool (memory) ---

/** Replies up to this size are assembled in a buffer borrowed from the pool. */
const REPLY_BUFFER_BYTES = 4 * 1024;
/** How many free reply buffers the pool keeps for the next replies. */
const REPLY_POOL_SIZE = 64;

/**
 * Reply buffers shared by every connection: `send()` takes one, writes from
 * it, and gives it back, so an idle connection holds no reply buffer (10,000
 * idle connections would otherwise hold 10,000 of them), and no buffer is
 * allocated per reply either. With the small idle read buffer, this is why
 * the benchmark's 10,000 held-open connections cost about 9 to 11 KB each
 * (the README has the figures).
 */
const replyPool: Uint8Array[] = [];

// --- Not in the book: fair turns under overload ---
/**
 * Deno runs every pending `conn.read()` from one Rust task (deno_core's op
 * driver), and tokio lets a task complete at most 128 socket reads each time
 * it runs (its cooperative budget). A read ready past the budget is put off,
 * and the put-off reads are woken last in, first out, after every socket that
 * became ready meanwhile. In a closed loop (each reply brings the next line)
 * more than 128 ready reads means the same connections lose every round:
 * measured at 500 connections, some got a fifth of the mean, and a read could
 * wait over a second with its line already there.
 *
 * So connections take turns, as clients of the book's one loop do one level
 * up. A turn runs from issuing a read to writing the last reply for what it
 * read; at most TURNS connections hold one, well under the budget, so a read
 * that is ready completes in the loop turn that finds it. The others wait
 * first come, first served. A turn that makes no progress (no read or write
 * completes) between two sweeps of a short timer goes back: its read waits
 * for a client with nothing to say for now, or its write for a client that
 * does not read. That connection waits on, uncounted, so idle and stuck
 * clients never hold up active ones. And when no read at all completes for
 * two quick checks in a row, every pending read is idle: those turns all go
 * back at once, so a new client of a server holding many idle ones is not
 * kept waiting for the sweeps. With no one waiting, a read takes its turn at
 * once and no timer runs.
 *
 * The uncounted reads still count against the budget when they complete: if
 * more than the budget's worth of idle clients spoke in the same instant,
 * some would wait a round again, once.
 */
export const TURNS = 64;
/** How often, while someone waits for a turn, stalled turns are looked for. */
const TURN_SWEEP_MS = 10;
/** How often, while someone waits for a turn, a quiet loop is looked for. */
const QUIET_CHECK_MS = 1;

/** What `Turns` needs to know of a connection. */
export interface Reader {
  /** Whether a read is pending now. */
  reading: boolean;
  /** Reads and writes completed so far. */
  progress: number;
}

export class Turns {
  /** Who holds a turn, and its `progress` when a sweep last saw it. */
  readonly #holders = new Map<Reader, number>();
  /** Waiting for a turn, first come first: [#head, length) still waits. */
  #waiting: (() => void)[] = [];
  #head = 0;
  #sweeper?: ReturnType<typeof setInterval>;
  #quietChecker?: ReturnType<typeof setInterval>;
  /** Reads completed by all connections together, so far. */
  #readsByAll = 0;
  /** `#readsByAll` at the last quiet check, and when that check ran. */
  #readsAtCheck = 0;
  #checkedAt = 0;
  /** How many quiet checks in a row, each on time, saw no read complete. */
  #quietChecks = 0;
  /** After shutdown, every read goes at once (to fail on its closed connection). */
  #open = false;

  /** Takes a turn for `client`: at once (undefined), or a promise of it. */
  take(client: Reader): Promise<void> | undefined {
    const free = this.#holders.size < TURNS &&
      this.#head === this.#waiting.length;
    if (free || this.#open) {
      this.#holders.set(client, -1);
      return undefined;
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiting.push(() => {
      this.#holders.set(client, -1);
      resolve();
    });
    if (this.#sweeper === undefined) {
      this.#sweeper = setInterval(() => this.#sweep(), TURN_SWEEP_MS);
      this.#readsAtCheck = this.#readsByAll;
      this.#checkedAt = performance.now();
      this.#quietChecks = 0;
      this.#quietChecker = setInterval(() => this.#quiet(), QUIET_CHECK_MS);
    }
    return promise;
  }

  /** Ends `client`'s turn, if it holds one: the next in line takes it. */
  giveBack(client: Reader): void {
    if (this.#holders.delete(client)) this.#admit();
  }

  /** Counts a read completed, by any connection (see `#quiet`). */
  countRead(): void {
    this.#readsByAll++;
  }

  /** Shutdown: every waiting read goes now, and later ones at once. */
  open(): void {
    this.#open = true;
    this.#admit();
  }

  #admit(): void {
    while (
      this.#head < this.#waiting.length &&
      (this.#holders.size < TURNS || this.#open)
    ) {
      const start = this.#waiting[this.#head];
      this.#head++;
      start();
    }
    if (this.#head === this.#waiting.length) {
      this.#waiting = [];
      this.#head = 0;
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
      clearInterval(this.#quietChecker);
      this.#quietChecker = undefined;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#waiting.length) {
      // Under steady overload the line never empties: drop the ones served,
      // or the array would grow (and keep their closures) for ever.
      this.#waiting = this.#waiting.slice(this.#head);
      this.#head = 0;
    }
  }

  /** A turn with no progress between two sweeps in a row goes back. */
  #sweep(): void {
    for (const [client, seen] of this.#holders) {
      if (seen === client.progress) {
        this.#holders.delete(client);
      } else {
        this.#holders.set(client, client.progress);
      }
    }
    this.#admit();
  }

  /**
   * No read completed since the last check, for two checks in a row: the
   * loop is quiet, and every pending read is idle, so their turns all go
   * back now instead of after two sweeps. A check that runs late came after
   * a pause (a garbage collection, a long loop turn), and a timer due
   * during a pause runs before the reads that completed meanwhile are
   * delivered, in the same loop turn: such a check cannot tell, and the
   * count starts again. Under overload reads complete all the time, and
   * this frees nothing.
   */
  #quiet(): void {
    const now = performance.now();
    const late = now - this.#checkedAt > 3 * QUIET_CHECK_MS;
    this.#checkedAt = now;
    if (late || this.#readsByAll !== this.#readsAtCheck) {
      this.#readsAtCheck = this.#readsByAll;
      this.#quietChecks = 0;
      return;
    }
    this.#quietChecks++;
    if (this.#quietChecks < 2) return;
    for (const client of this.#holders.keys()) {
      if (client.reading) this.#holders.delete(client);
    }
    this.#admit();
  }
}

// --- Not in the book: listening, accepting, bounds and shutdown ---

const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
/** How long, after its shutdown, the script waits for forwarded SIGINTs. */
const SIGNAL_GRACE_MS = 100;
/** Seconds a started line may take to end (--line-timeout): a client that
 * sends part of a line and waits cannot hold its buffer for ever. */
const LINE_TIMEOUT_S = 10;
/** After the too-long error: drop at most this much of what the client sends. */
const LINGER_BYTES = 8 * 1024 * 1024;
const LINGER_MS = 2000;
const LINE_TOO_LONG = new TextEncoder().encode(
  `Error: line longer than ${MAX_LINE_BYTES} bytes, closing the connection\n`,
);

/**
 * An address and its port as one: `127.0.0.1:9131` as in the book, and an
 * IPv6 address in brackets, `[::1]:9131`, so that its own colons do not run
 * into the port's.
 */
export function hostPort(host: string, port: number): string {
  if (host.includes(":")) return `[${host}]:${port}`;
  return `${host}:${port}`;
}

/** Listens on host:port, or says why it cannot and exits 1. */
function listenOrExit(
  host: string | undefined,
  port: number,
): Deno.TcpListener {
  const hostname = host ?? SERVER_HOST;
  try {
    return Deno.listen({ hostname, port });
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      // Deno checks --allow-net before it listens (`deno run` without it
      // asks, or with --no-prompt fails here). The task's --allow-net names
      // localhost, 127.0.0.1 and [::1] only.
      const works = commandThatWorks(hostname, Deno.args);
      const what = host === undefined
        ? `listening on ${hostname} (the default host) needs network permission`
        : `--host=${host} needs network permission for it`;
      console.error(`Error: ${what}: ${works}`);
    } else {
      const { message } = error as Error;
      console.error(
        `Error: cannot listen on ${hostPort(hostname, port)}: ${message}`,
      );
    }
    Deno.exit(1);
  }
}

/**
 * The accept loop (diesel's `app.run()` for its one service): each accepted
 * connection gets its own handler, until shutdown closes the listener.
 */
async function serve(
  server: EchoServer,
  listener: Deno.TcpListener,
): Promise<void> {
  while (!server.shuttingDown) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (server.shuttingDown) break;
      console.error(`accept failed: ${(error as Error).message}`);
      // Out of descriptors, accept() fails at once: pause, do not spin. A
      // connection that failed on its own is no reason to keep others waiting.
      if (isOutOfResources(error as Error)) await delay(ACCEPT_PAUSE_MS);
      continue;
    }
    if (server.shuttingDown) {
      // Accepted just as shutdown closed the listener: close it too.
      closeQuietly(conn);
      break;
    }
    // TCP_NODELAY: send each reply at once instead of waiting to batch small
    // writes (Nagle's algorithm). Deno sets it on each connection; a
    // listener has no such option.
    conn.setNoDelay(true);
    // Started, not awaited: an async function runs until its first `await`
    // and returns a promise, so the loop goes straight back to accept(), and
    // this client's handler goes on whenever its reads and writes can.
    server.handler(conn);
  }
}

/**
 * Did accept() fail for want of file descriptors or memory (EMFILE, ENFILE,
 * ENOMEM, ENOBUFS)? Only then does waiting help: a descriptor may free up.
 * Any other failure (a client that reset while queued: os error 107) is that
 * one connection's, and the next one may be fine.
 */
function isOutOfResources(error: Error): boolean {
  return /os error (12|23|24|105)\b/.test(error.message);
}

/**
 * One shutdown, however many signals arrive: a terminal's Ctrl-C under
 * `deno task` reaches the task runner and this script, so a second SIGINT is
 * normal. A signal listener replaces the default action (ending the
 * process). The listeners are added before the ready line (a Ctrl-C right
 * after it still shuts down cleanly) and are never removed (a SIGINT that
 * found no listener would kill the process with 130).
 */
function shutDownOnSignals(
  server: EchoServer,
  listener: Deno.TcpListener,
): void {
  const shutdown = () => {
    if (server.shuttingDown) return;
    server.shuttingDown = true;
    console.log("Shutting down echo server...");
    listener.close(); // the pending accept() rejects: serve() ends
    server.stopSweep();
    for (const conn of server.connections.keys()) closeQuietly(conn);
    server.turns.open(); // the waiting reads now fail on their closed connections
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
}

/**
 * A terminal's Ctrl-C reaches `deno task` and this script at once, and
 * `deno task` then forwards it to the script: more SIGINTs come a moment
 * after the first. While the listeners are in place they do nothing (the
 * shutdown is done), but a SIGINT that comes while the process is ending
 * finds none and kills it with 130. So the script waits SIGNAL_GRACE_MS for
 * the forwarded ones, then ends with Deno.exit(0) at once (ending by itself,
 * Deno would first tear the runtime down, a longer window).
 */
async function exitAfterSignalGrace(): Promise<never> {
  await delay(SIGNAL_GRACE_MS);
  Deno.exit(0);
}

// --- Not in the book: tracing ---

/** A trace line shows at most this many bytes of client data. */
const PREVIEW_BYTES = 32;

/**
 * Client data as a trace line shows it: at most 32 bytes, in double quotes,
 * then `...` if there was more. Printable characters (ASCII, Korean, any
 * valid UTF-8 that is not a control or format character) show as text;
 * every other byte, and `"` and `\`, as \xNN, so invalid UTF-8 and control
 * bytes are seen, not obeyed. The parts are shown as one run of bytes.
 */
export function preview(...parts: Uint8Array[]): string {
  let total = 0;
  for (const part of parts) total += part.length;
  const limit = Math.min(total, PREVIEW_BYTES);
  // Up to 3 bytes past the limit too, to tell a character the limit cuts
  // (left to the "...") from bytes that are not UTF-8 (escaped).
  const shown = new Uint8Array(Math.min(total, PREVIEW_BYTES + 3));
  let filled = 0;
  for (const part of parts) {
    const piece = part.subarray(0, shown.length - filled);
    shown.set(piece, filled);
    filled += piece.length;
  }
  let text = "";
  let i = 0;
  while (i < limit) {
    const character = printableAt(shown, i);
    if (character !== undefined) {
      if (i + character.bytes > limit) break; // cut by the limit
      text += character.text;
      i += character.bytes;
    } else {
      text += `\\x${shown[i].toString(16).padStart(2, "0")}`;
      i++;
    }
  }
  const more = total > PREVIEW_BYTES ? "..." : "";
  return `"${text}${more}"`;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The printable character that starts at `bytes[i]`, with its length in
 * bytes, or undefined: a control, format or separator character, `"` or
 * `\`, or bytes that are not whole valid UTF-8 (the decoder is `fatal`, so it
 * throws on overlong forms and surrogates instead of replacing them).
 */
function printableAt(
  bytes: Uint8Array,
  i: number,
): { text: string; bytes: number } | undefined {
  const lead = bytes[i];
  let length = 0;
  if (lead < 0x80) length = 1;
  else if (lead >= 0xc2 && lead <= 0xdf) length = 2;
  else if (lead >= 0xe0 && lead <= 0xef) length = 3;
  else if (lead >= 0xf0 && lead <= 0xf4) length = 4;
  if (length === 0 || i + length > bytes.length) return undefined;
  let text: string;
  try {
    text = strictUtf8.decode(bytes.subarray(i, i + length));
  } catch {
    return undefined;
  }
  if (text === '"' || text === "\\") return undefined;
  if (/[\p{C}\p{Zl}\p{Zp}]/u.test(text)) return undefined;
  return { text, bytes: length };
}

/** A count and its noun in good English: `1 byte`, `14 bytes`. */
function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// --- Not in the book: the command line ---

const FILE = "2_5_echo_server_with_diesel.ts";
const SERVER_HOST = "localhost";
const USAGE =
  `usage: ${FILE} [-h] --port PORT [--host HOST] [--line-timeout SECONDS] [--trace]`;
const HELP = `${USAGE}

Echo server example with Diesel, ported to Deno

options:
  -h, --help   show this help message and exit
  --port PORT  port to listen on (0 picks a free port)
  --host HOST  address to listen on (default: ${SERVER_HOST})
  --line-timeout SECONDS
               time a started line may take to end (default: ${LINE_TIMEOUT_S})
  --trace      print each line read and each reply written, per client, on
               stderr`;

/** What the command line asks for, checked as argparse would. */
interface Options {
  port: number;
  /** Undefined when --host was not given: SERVER_HOST, said so on errors. */
  host?: string;
  trace?: (line: string) => void;
  lineTimeoutMs: number;
}

/** argparse's `ArgumentParser`, `add_argument` and `parse_args()` for 2_5. */
function parseArguments(argv: string[]): Options {
  const args = parseArgs(argv, {
    string: ["port", "host", "line-timeout"],
    boolean: ["help", "trace"],
    alias: { h: "help" },
    unknown: (arg: string) => argumentError(`unrecognized arguments: ${arg}`),
  });
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  if (args.port === undefined) {
    argumentError("the following arguments are required: --port");
  }
  const port = Number(args.port);
  if (!/^\d+$/.test(args.port) || port > 65535) {
    argumentError(`argument --port: invalid port value: '${args.port}'`);
  }
  const lineTimeout = args["line-timeout"] ?? `${LINE_TIMEOUT_S}`;
  const seconds = Number(lineTimeout);
  if (!(seconds > 0 && seconds <= 3600)) {
    argumentError(`argument --line-timeout: invalid value: '${lineTimeout}'`);
  }
  // One line on stderr per line read and reply written, only with --trace.
  const trace: ((line: string) => void) | undefined = args.trace
    ? (line) => console.error(`trace: ${line}`)
    : undefined;
  return { port, host: args.host, trace, lineTimeoutMs: seconds * 1000 };
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

/**
 * The whole command that may listen on `host`: `deno run` with the
 * permission for it and the arguments this run was given (quoted for a
 * shell where they need it).
 */
export function commandThatWorks(host: string, argv: string[]): string {
  const quoted = argv.map((arg) =>
    /^[\w@%+=:,./[\]-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`
  );
  const allow = `--allow-net=${netPermission(host)}`;
  return ["deno", "run", allow, FILE, ...quoted].join(" ");
}

/** The `--allow-net` value that lets `deno run` listen on `host`. */
function netPermission(host: string): string {
  if (host.includes(":")) return `[${host}]`; // an IPv6 address
  return host;
}

// book: if __name__ == '__main__':
if (import.meta.main) {
  // book: parser = argparse.ArgumentParser(description='Echo server example with Diesel')
  // book: parser.add_argument('--port', action="store", dest="port", type=int, required=True)
  // book: given_args = parser.parse_args()
  // book: port = given_args.port
  const { port, host, trace, lineTimeoutMs } = parseArguments(Deno.args);
  // book: main(port)
  await main(port, host, trace, lineTimeoutMs);
  await exitAfterSignalGrace();
}
