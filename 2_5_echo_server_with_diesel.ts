/**
 * Recipe 2_5: "Multiplexing an echo server using the Diesel concurrent library"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * Run it:
 *
 *     deno task 2_5 --port=8800
 *     # or: deno run --allow-net=localhost,127.0.0.1 2_5_echo_server_with_diesel.ts --port=8800
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
 */

import { parseArgs } from "@std/cli/parse-args";
import { delay } from "@std/async/delay";

const SERVER_HOST = "localhost";
const MAX_LINE_BYTES = 64 * 1024;
const READ_SIZE = 16 * 1024;
const LINGER_BYTES = 8 * 1024 * 1024; // dropped after the error, at most
const LINGER_MS = 2000;
const YOU_SAID = new TextEncoder().encode("You said: ");
const LINE_TOO_LONG = new TextEncoder().encode(
  `Error: line longer than ${MAX_LINE_BYTES} bytes, closing the connection\n`,
);
const USAGE =
  "usage: 2_5_echo_server_with_diesel.ts [-h] --port PORT [--host HOST]";
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

/** An echo server: the book's class, with its one handler. */
export class EchoServer {
  async handler(conn: Deno.TcpConn): Promise<void> {
    const { hostname: host, port } = conn.remoteAddr;
    console.log(`Echo client connected from: ${host}:${port}`);
    const client = new DieselConnection(conn);
    let farewell = "disconnected";
    try {
      while (true) {
        const message = await client.untilEol();
        if (message === null) break;
        await client.send(YOU_SAID, message); // "You said: " + message
      }
    } catch (error) {
      if (error instanceof LineTooLongError) {
        farewell = `sent a line over ${MAX_LINE_BYTES} bytes, disconnected`;
        await client.send(LINE_TOO_LONG).then(() => client.linger())
          .catch(() => {});
      } else if (error instanceof Deno.errors.BadResource) {
        farewell = "closed by server shutdown";
      } else {
        farewell = `dropped (${(error as Error).name}: ${
          (error as Error).message
        })`;
      }
    } finally {
      try {
        conn.close();
      } catch {
        // already closed by shutdown
      }
    }
    console.log(`Echo client ${host}:${port} ${farewell}`);
  }
}

/** diesel.Application + diesel.Service(handler, port), then app.run(). */
export async function main(port: number, host = SERVER_HOST): Promise<void> {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: host, port });
  } catch (error) {
    console.error(
      `Error: cannot listen on ${host}:${port}: ${(error as Error).message}`,
    );
    Deno.exit(1);
  }
  const server = new EchoServer();
  const connections = new Set<Deno.TcpConn>();
  const handlers = new Set<Promise<void>>();

  let shuttingDown = false;
  const shutdown = () => {
    if (shuttingDown) return;
    shuttingDown = true;
    console.log("Shutting down echo server...");
    listener.close();
    for (const conn of connections) conn.close();
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);

  console.log(`Listening on ${listener.addr.hostname}:${listener.addr.port}`);
  while (!shuttingDown) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (shuttingDown) break;
      // One client that resets before it is accepted must not end the server.
      console.error(`accept failed: ${(error as Error).message}`);
      await delay(100); // out of file descriptors it fails at once: no spin
      continue;
    }
    conn.setNoDelay(true);
    connections.add(conn);
    const handled = server.handler(conn).finally(() => {
      connections.delete(conn);
      handlers.delete(handled);
    });
    handlers.add(handled);
  }
  await Promise.all(handlers);
  Deno.removeSignalListener("SIGINT", shutdown);
  Deno.removeSignalListener("SIGTERM", shutdown);
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n2_5_echo_server_with_diesel.ts: error: ${message}`);
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
}
