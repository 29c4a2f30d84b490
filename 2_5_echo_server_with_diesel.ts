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
const MAX_LINE_BYTES = 64 * 1024;
const READ_SIZE = 16 * 1024;
const LINGER_BYTES = 8 * 1024 * 1024; // dropped after the error, at most
const LINGER_MS = 2000;
const YOU_SAID = new TextEncoder().encode("You said: ");
const LINE_TOO_LONG = new TextEncoder().encode(
  `Error: line longer than ${MAX_LINE_BYTES} bytes, closing the connection\n`,
);
const USAGE = `usage: ${FILE} [-h] --port PORT [--host HOST]`;
const HELP = `${USAGE}

Echo server example with Diesel, ported to Deno

options:
  -h, --help   show this help message and exit
  --port PORT  port to listen on (0 picks a free port)
  --host HOST  address to listen on (default: ${SERVER_HOST})`;

class LineTooLongError extends Error {}

/**
 * What diesel gave a handler: `untilEol()` and `send()` on the current
 * connection. Only this class buffers, so only it needs bounding.
 */
export class DieselConnection {
  // One read buffer per connection, reused: [start, end) is read, not taken.
  #buffer = new Uint8Array(READ_SIZE);
  #start = 0;
  #end = 0;
  #eof = false;
  #out = new Uint8Array(READ_SIZE);

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
      const newline = pending.indexOf(0x0a, searchFrom);
      const length = newline < 0 ? pending.length : newline;
      if (length - (pending[length - 1] === 0x0d ? 1 : 0) > MAX_LINE_BYTES) {
        throw new LineTooLongError();
      }
      if (newline >= 0 || this.#eof) {
        const line = newline >= 0 ? pending.subarray(0, newline + 1) : pending;
        this.#start += line.length;
        return line.length > 0 ? line : null;
      }
      searchFrom = pending.length;
      await this.#fill();
    }
  }

  async #fill(): Promise<void> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buffer.length) {
      // Full: move the partial line to the front, into a buffer twice the
      // size if it takes up over half (MAX_LINE_BYTES bounds the growth).
      const pending = this.#buffer.subarray(this.#start, this.#end);
      const grow = pending.length > this.#buffer.length / 2;
      if (grow) this.#buffer = new Uint8Array(this.#buffer.length * 2);
      this.#buffer.set(pending);
      [this.#start, this.#end] = [0, pending.length];
    }
    const n = await this.conn.read(this.#buffer.subarray(this.#end));
    if (n === null) this.#eof = true;
    else this.#end += n;
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
   * Writes the parts as one buffer (a reused one: no allocation per reply),
   * every byte of it: `conn.write` may take only part of a buffer.
   */
  async send(...parts: Uint8Array[]): Promise<void> {
    const size = parts.reduce((sum, part) => sum + part.length, 0);
    if (this.#out.length < size) this.#out = new Uint8Array(size);
    let data = this.#out.subarray(0, 0);
    for (const part of parts) {
      this.#out.set(part, data.length);
      data = this.#out.subarray(0, data.length + part.length);
    }
    while (data.length > 0) data = data.subarray(await this.conn.write(data));
  }
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

  async handler(conn: Deno.TcpConn): Promise<void> {
    const { hostname: host, port } = conn.remoteAddr;
    console.log(`Echo client connected from: ${host}:${port}`);
    this.connections.add(conn);
    const client = new DieselConnection(conn);
    let farewell = "disconnected";
    try {
      while (true) {
        const message = await client.untilEol();
        if (message === null) break;
        await client.send(YOU_SAID, message); // "You said: " + message
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
      this.connections.delete(conn);
      closeQuietly(conn);
    }
    console.log(`Echo client ${host}:${port} ${farewell}`);
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
export async function main(port: number, host = SERVER_HOST): Promise<void> {
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
  const server = new EchoServer();
  const handlers = new Set<Promise<void>>();

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
    const handled = server.handler(conn).finally(() => {
      handlers.delete(handled);
    });
    handlers.add(handled);
  }
  await Promise.all(handlers);
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["port", "host"],
    boolean: ["help"],
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
  await main(port, args.host);
  // Exit at once, with the signal listeners still in place. Left to end by
  // itself, Deno first tears the runtime down, and a SIGINT arriving then
  // finds no listener and kills the process with 130: `deno task` forwards a
  // terminal's Ctrl-C to the script, so one more SIGINT often comes just then.
  Deno.exit(0);
}
