/**
 * Recipe 2_5: "Multiplexing an echo server using the Diesel concurrent library"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * Run it:
 *
 *     deno task 2_5 --port=8800
 *     # or: deno run --allow-net=localhost,127.0.0.1 2_5_echo_server_with_diesel.ts --port=8800
 *     deno task 2_5 --port=8800 --host=::1   # IPv6: the task may listen on [::1] too
 *
 * Any other `--host` needs its own permission; the script says which command
 * works, e.g. `deno run --allow-net=0.0.0.0 2_5_echo_server_with_diesel.ts
 * --host=0.0.0.0 --port=8800`.
 *
 * Then, in a second terminal, type lines and read them back:
 *
 *     telnet localhost 8800
 *     nc localhost 8800
 *
 * From Python to Deno:
 * - diesel gave Python 2 a handler that reads like blocking code
 *   (`message = diesel.until_eol()`, then `diesel.send(...)`) while one event
 *   loop served every client. An `async` function is exactly that in Deno:
 *   each `await` hands the event loop to the other clients. `EchoServer.handler`
 *   below keeps the book's loop line for line.
 * - `diesel.Application` + `diesel.Service(handler, port)` become `main()`:
 *   listen, then start one `handler` per accepted connection, never awaited
 *   in turn, so no client waits for another.
 * - The book's script no longer runs: diesel is Python 2 only, and
 *   `import diesel` fails on Python 3 (its `logmod` import breaks).
 *
 * Fixed from the book:
 * - On a disconnect, the book's `while True: try ... except: print(e)` loops
 *   forever printing the exception. Here EOF or a reset ends that client's
 *   handler only, with one log line.
 * - diesel's `until_eol` only knew "\r\n". Both "\n" (nc) and "\r\n" (telnet)
 *   end a line, and the reply ends with the terminator the client used. Bytes
 *   come back exactly, invalid UTF-8 included. A last line with no terminator
 *   before the client's EOF is still answered (without a terminator).
 * - A line is bounded: past MAX_LINE_BYTES the client gets a one-line error
 *   and is disconnected (lingering first, so a reset cannot destroy the
 *   error); everyone else carries on.
 * - Ctrl-C or SIGTERM: one shutdown line, every client closed with
 *   "closed by server shutdown", exit 0. A client that resets before it is
 *   accepted costs one log line, not a pause: the accept loop pauses only
 *   when the process is out of descriptors or memory.
 */

import { parseArgs } from "@std/cli/parse-args";
import { delay } from "@std/async/delay";

const FILE = "2_5_echo_server_with_diesel.ts";
const SERVER_HOST = "localhost";
const ACCEPT_PAUSE_MS = 100;
/** How long, after its shutdown, the script waits for forwarded SIGINTs. */
const SIGNAL_GRACE_MS = 100;
const MAX_LINE_BYTES = 64 * 1024;
/** An idle connection's read buffer: a pending read holds it until data comes. */
const IDLE_READ_BYTES = 256;
/** Replies up to this size are assembled in a buffer borrowed from a pool. */
const REPLY_BUFFER_BYTES = 4 * 1024;
/** How many free reply buffers the pool keeps for the next replies. */
const REPLY_POOL_SIZE = 64;
const LINGER_BYTES = 8 * 1024 * 1024; // dropped after the error, at most
const LINGER_MS = 2000;
const YOU_SAID = new TextEncoder().encode("You said: ");
const LINE_TOO_LONG = new TextEncoder().encode(
  `Error: line longer than ${MAX_LINE_BYTES} bytes, closing the connection\n`,
);
const PREVIEW_BYTES = 32;
const USAGE = `usage: ${FILE} [-h] --port PORT [--host HOST] [--trace]`;
const HELP = `${USAGE}

Echo server example with Diesel, ported to Deno

options:
  -h, --help   show this help message and exit
  --port PORT  port to listen on (0 picks a free port)
  --host HOST  address to listen on (default: ${SERVER_HOST})
  --trace      print each line read and each reply written, per client, on
               stderr`;

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
  // Without a "\n" yet, a "\r" at the end may be half of a "\r\n".
  const length = newline < 0 ? pending.length : newline;
  const terminatorPart = pending[length - 1] === 0x0d ? 1 : 0;
  if (length - terminatorPart > maxLine) return { kind: "too long" };
  if (newline < 0) return { kind: "partial" };
  return { kind: "line", end: newline + 1 };
}

/**
 * Reply buffers shared by every connection: `send()` takes one, writes from
 * it, and gives it back, so an idle connection holds no reply buffer (10,000
 * idle connections would otherwise hold 10,000 of them).
 */
const replyPool: Uint8Array[] = [];

/**
 * What diesel gave a handler: `untilEol()` and `send()` on the current
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

  constructor(readonly conn: Deno.Conn) {}

  /**
   * The next line with its terminator ("\n" or "\r\n"); at EOF the last
   * unterminated bytes, then null. The line is a view into the read buffer:
   * use it before the next call.
   */
  async untilEol(): Promise<Uint8Array | null> {
    let searchFrom = 0;
    while (true) {
      const pending = this.#buffer.subarray(this.#start, this.#end);
      const scan = lineEnd(pending, MAX_LINE_BYTES, searchFrom);
      if (scan.kind === "too long") throw new LineTooLongError();
      if (scan.kind === "line" || this.#eof) {
        const line = scan.kind === "line"
          ? pending.subarray(0, scan.end)
          : pending; // EOF: the last bytes, even without a terminator
        this.#start += line.length;
        return line.length > 0 ? line : null;
      }
      searchFrom = pending.length;
      this.#makeRoom();
      const space = this.#buffer.subarray(this.#end);
      const n = await this.conn.read(space);
      if (n === null) this.#eof = true;
      else this.#end += n;
      this.#lastReadFilled = n === space.length;
    }
  }

  /** Room to read into: at the end of the buffer, which grows or shrinks. */
  #makeRoom(): void {
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      if (this.#buffer.length > IDLE_READ_BYTES && !this.#lastReadFilled) {
        this.#buffer = new Uint8Array(IDLE_READ_BYTES); // give the rest back
      }
    }
    if (this.#end === this.#buffer.length) {
      // Full: move the partial line to the front of a buffer twice the size.
      // MAX_LINE_BYTES bounds the growth: a full buffer of 128 KiB holds a
      // line too long, and untilEol() has thrown before it grows again.
      const pending = this.#buffer.subarray(this.#start, this.#end);
      const grown = new Uint8Array(this.#buffer.length * 2);
      grown.set(pending);
      this.#buffer = grown;
      [this.#start, this.#end] = [0, pending.length];
    }
  }

  /**
   * Before closing on a client that is still sending: shut down writing,
   * then drop what it sends (up to LINGER_BYTES, for LINGER_MS), since
   * closing with unread bytes sends a reset that can destroy our last words.
   */
  async linger(): Promise<void> {
    await this.conn.closeWrite();
    const timer = setTimeout(() => this.conn.close(), LINGER_MS);
    try {
      for (let left = LINGER_BYTES; left > 0;) {
        const n = await this.conn.read(this.#buffer);
        if (n === null) break;
        left -= n;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Writes the parts as one buffer, every byte of it: `conn.write` may take
   * only part of a buffer. The buffer is borrowed from `replyPool` (a reply
   * over REPLY_BUFFER_BYTES gets one of its own) and given back when the
   * write is done, so no allocation is made per reply.
   */
  async send(...parts: Uint8Array[]): Promise<void> {
    const size = parts.reduce((sum, part) => sum + part.length, 0);
    const pooled = size <= REPLY_BUFFER_BYTES;
    const buffer = pooled
      ? replyPool.pop() ?? new Uint8Array(REPLY_BUFFER_BYTES)
      : new Uint8Array(size);
    try {
      let length = 0;
      for (const part of parts) {
        buffer.set(part, length);
        length += part.length;
      }
      let data = buffer.subarray(0, length);
      while (data.length > 0) data = data.subarray(await this.conn.write(data));
    } finally {
      // A write that settled (done or failed) no longer holds the buffer.
      if (pooled && replyPool.length < REPLY_POOL_SIZE) replyPool.push(buffer);
    }
  }
}

/**
 * Client data as a trace line shows it: at most 32 bytes, in double quotes,
 * every byte that is not printable ASCII (and `"` and `\`) as \xNN, then
 * `...` if there was more. The parts are shown as one run of bytes.
 */
export function preview(...parts: Uint8Array[]): string {
  let text = "";
  let shown = 0;
  let total = 0;
  for (const part of parts) {
    total += part.length;
    for (const byte of part.subarray(0, PREVIEW_BYTES - shown)) {
      const plain = byte >= 0x20 && byte < 0x7f && byte !== 0x22 &&
        byte !== 0x5c;
      text += plain
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, "0")}`;
      shown++;
    }
  }
  return `"${text}${total > PREVIEW_BYTES ? "..." : ""}"`;
}

/** Closes a connection, ignoring "already closed". */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed (by shutdown, or by the handler's own end)
  }
}

/** An echo server: the book's class, with its one handler. */
export class EchoServer {
  /** Every open connection, so that shutdown can close them. */
  readonly connections = new Set<Deno.TcpConn>();
  /** Set by shutdown: a handler's read or write that fails now was closed by it. */
  shuttingDown = false;
  /**
   * `trace`, when given (`--trace`), gets one line per line read and per
   * reply written. When it is not, each `this.trace?.(...)` below stops at
   * the `?.`, before its message is built: tracing off costs nothing.
   */
  constructor(readonly trace?: (line: string) => void) {}

  /** Resolved when shutdown has begun and the last handler has ended. */
  readonly #allEnded = Promise.withResolvers<void>();

  /** After shutdown: resolves once every handler has printed its farewell. */
  allEnded(): Promise<void> {
    if (this.connections.size === 0) this.#allEnded.resolve();
    return this.#allEnded.promise;
  }

  async handler(conn: Deno.TcpConn): Promise<void> {
    const { hostname: host, port } = conn.remoteAddr;
    console.log(`Echo client connected from: ${host}:${port}`);
    this.connections.add(conn);
    const client = new DieselConnection(conn);
    let farewell = "disconnected";
    try {
      while (true) {
        const message = await client.untilEol();
        if (message === null) {
          this.trace?.(`${host}:${port}: until_eol() found the end`);
          break;
        }
        this.trace?.(
          `${host}:${port}: until_eol() read ${message.length} bytes ` +
            preview(message),
        );
        await client.send(YOU_SAID, message); // "You said: " + message
        this.trace?.(
          `${host}:${port}: send() wrote ${YOU_SAID.length + message.length} ` +
            `bytes ${preview(YOU_SAID, message)}`,
        );
      }
    } catch (error) {
      if (this.shuttingDown) {
        // Closing a connection under a pending read rejects it (Interrupted
        // or BadResource): that is the shutdown, not the client's fault.
        farewell = "closed by server shutdown";
      } else if (error instanceof LineTooLongError) {
        farewell = `sent a line over ${MAX_LINE_BYTES} bytes, disconnected`;
        await client.send(LINE_TOO_LONG).then(() => client.linger())
          .catch(() => {});
      } else {
        farewell = `dropped (${(error as Error).name}: ${
          (error as Error).message
        })`;
      }
    } finally {
      closeQuietly(conn);
    }
    console.log(`Echo client ${host}:${port} ${farewell}`);
    this.connections.delete(conn);
    if (this.shuttingDown && this.connections.size === 0) {
      this.#allEnded.resolve();
    }
  }
}

/**
 * Is this `accept()` failure the process running out of something (file
 * descriptors or memory)? Only then does waiting help: a descriptor may free
 * up. Any other failure is one connection's own (a client that reset before
 * it was accepted: `NotConnected`, os error 107).
 */
function isOutOfResources(error: unknown): boolean {
  return /os error (12|23|24|105)\b/.test(String((error as Error)?.message));
}

/** The `--allow-net` value that lets `deno run` listen on `host`. */
function netPermission(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** diesel.Application + diesel.Service(handler, port), then app.run(). */
export async function main(
  port: number,
  host = SERVER_HOST,
  trace?: (line: string) => void,
): Promise<void> {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: host, port });
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      // The task's --allow-net names localhost, 127.0.0.1 and [::1] only.
      const allow = `--allow-net=${netPermission(host)}`;
      const works = `deno run ${allow} ${FILE} --host=${host} --port=${port}`;
      console.error(
        `Error: --host=${host} needs network permission for it: ${works}`,
      );
    } else {
      console.error(
        `Error: cannot listen on ${host}:${port}: ${(error as Error).message}`,
      );
    }
    Deno.exit(1);
  }
  const server = new EchoServer(trace);

  // One shutdown, however many signals arrive: a terminal's Ctrl-C under
  // `deno task` reaches the task runner and this script, so a second SIGINT
  // is normal. The listeners are added before the ready line (a Ctrl-C right
  // after it still shuts down cleanly) and are never removed (a SIGINT that
  // found no listener would kill the process with 130).
  const shutdown = () => {
    if (server.shuttingDown) return;
    server.shuttingDown = true;
    console.log("Shutting down echo server...");
    listener.close();
    for (const conn of server.connections) closeQuietly(conn);
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);

  console.log(`Listening on ${listener.addr.hostname}:${listener.addr.port}`);
  while (!server.shuttingDown) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (server.shuttingDown) break;
      console.error(`accept failed: ${(error as Error).message}`);
      // Out of descriptors, accept() fails at once: pause, do not spin. A
      // connection that failed on its own is no reason to keep others waiting.
      if (isOutOfResources(error)) await delay(ACCEPT_PAUSE_MS);
      continue;
    }
    conn.setNoDelay(true);
    // Started, not awaited: the loop goes straight back to accept(), and
    // this client's handler runs whenever its reads and writes can go on.
    server.handler(conn);
  }
  await server.allEnded();
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["port", "host"],
    boolean: ["help", "trace"],
    alias: { h: "help" },
    default: { host: SERVER_HOST },
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
  // One line on stderr per line read and reply written, only with --trace.
  const trace: ((line: string) => void) | undefined = args.trace
    ? (line) => console.error(`trace: ${line}`)
    : undefined;
  await main(port, args.host, trace);
  // A terminal's Ctrl-C reaches `deno task` and this script at once, and
  // `deno task` then forwards it to the script: more SIGINTs come a moment
  // after the first. While the listeners are in place they do nothing (the
  // shutdown is done), but a SIGINT that comes while the process is ending
  // finds none and kills it with 130. So the script waits SIGNAL_GRACE_MS
  // for the forwarded ones, then ends with Deno.exit(0) at once (ending by
  // itself, Deno would first tear the runtime down, a longer window).
  await delay(SIGNAL_GRACE_MS);
  Deno.exit(0);
}
