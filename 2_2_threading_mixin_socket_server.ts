/**
 * Recipe 2_2: "Using ThreadingMixIn in your socket server applications"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * The book's demo (a server and three clients in one script, then exit):
 *
 *     deno task 2_2
 *     # or: deno run --allow-net=localhost,127.0.0.1 --allow-read=2_2_threading_mixin_socket_server.ts 2_2_threading_mixin_socket_server.ts
 *
 * The server alone; then, from a second terminal, one exchange each:
 *
 *     deno task 2_2 --serve --port=8800
 *     echo "Hello from nc" | nc -N localhost 8800   # Thread-1: Hello from nc
 *     telnet localhost 8800                        # type one line
 *
 * From Python to Deno:
 * - `ThreadingMixIn` starts a thread per connection. Here each one gets a
 *   new `Worker`, a real OS thread with its own isolate, named like Python's
 *   (`Thread-1`, ...) and running this same file. A `Conn` cannot be sent to
 *   a Worker, so the handler gets a readable and a writable stream
 *   (transferred) and does its own reading and writing. The bytes still pass
 *   through the accepting thread, which owns the socket and pumps them with
 *   `conn.read`/`conn.write`. (It does not hand over `conn.readable`: that
 *   closes the whole connection at the client's EOF, so a client that
 *   half-closes after sending, like `nc -N`, would lose its reply.)
 * - A Worker loading this file needs `--allow-read=<this file>`; it inherits
 *   the server's permissions (narrowing them needs an unstable flag).
 * - `serve_forever()` on a thread becomes `serveForever()` on the main
 *   thread's event loop ("MainThread", as Python calls it).
 *
 * Fixed from the book:
 * - The reply carried `b'...'`, the repr of the bytes; here the data itself,
 *   as bytes (a character cut at the 1024-byte read is fine), printed as text.
 * - `ThreadingMixIn` has no limit; here at most 40 Workers run, and at 40 the
 *   server stops accepting: clients wait in the kernel's backlog. A handler
 *   has `--timeout` seconds (default 10): a silent client cannot keep its
 *   slot. A Worker is terminated when its connection ends; one that fails
 *   ends only its connection, with a log line. With --serve, Ctrl-C or
 *   SIGTERM closes the listener, terminates every Worker, closes every
 *   connection and exits 0.
 */

const SERVER_HOST = "localhost";
const SERVER_PORT = 0; // the kernel picks a free port
const BUF_SIZE = 1024;
const MAX_THREADS = 40;
const TIMEOUT_S = 10;
const RELAY_SIZE = 16 * 1024;
const IN_WORKER = "WorkerGlobalScope" in globalThis;
const NAME = "2_2_threading_mixin_socket_server.ts";
const USAGE = `usage: ${NAME} [-h] [--serve] [--port PORT] [--timeout SECS]`;
const HELP = `${USAGE}

A Worker per connection. Without --serve: the book's demo, then exit.

options:
  -h, --help      show this help message and exit
  --serve         keep serving until Ctrl-C or SIGTERM
  --port PORT     port to listen on (default ${SERVER_PORT}: a free port)
  --timeout SECS  seconds one handler may take (default ${TIMEOUT_S})`;

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8, never throws

/** A client to test the threading server: send, print the reply, close. */
export async function client(ip: string, port: number, message: string) {
  const conn = await Deno.connect({ hostname: ip, port });
  try {
    let data = encoder.encode(message);
    while (data.length > 0) data = data.subarray(await conn.write(data));
    const response = new Uint8Array(BUF_SIZE);
    const n = await conn.read(response) ?? 0;
    console.log(`Client received: ${decoder.decode(response.subarray(0, n))}`);
  } finally {
    conn.close();
  }
}

/**
 * ThreadedTCPRequestHandler.handle(), run in the handler's Worker: one read
 * of up to 1024 bytes, one reply `<thread name>: <data>`. Returns the
 * outcome for the server's log.
 */
export async function handle(
  threadName: string,
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
): Promise<string> {
  const writer = writable.getWriter();
  try {
    const { value } = await readable.getReader().read();
    if (!value) return "client left without sending";
    const data = value.subarray(0, BUF_SIZE);
    const prefix = encoder.encode(`${threadName}: `);
    const response = new Uint8Array(prefix.length + data.length);
    response.set(prefix);
    response.set(data, prefix.length);
    await writer.write(response);
    return `replied with ${response.length} bytes`;
  } finally {
    await writer.close(); // the server then knows the reply is complete
  }
}

/** The client's bytes, read with conn.read(), into the Worker's readable. */
async function pumpIn(conn: Deno.TcpConn, to: WritableStreamDefaultWriter) {
  const buffer = new Uint8Array(RELAY_SIZE);
  try {
    for (let n; (n = await conn.read(buffer)) !== null;) {
      await to.write(buffer.slice(0, n));
    }
    await to.close(); // the client's EOF
  } catch {
    // The connection was closed or the handler finished.
  }
}

/** What the Worker writes, out to the client; a note if that failed. */
async function pumpOut(from: ReadableStreamDefaultReader, conn: Deno.Conn) {
  try {
    for (let r; !(r = await from.read()).done;) {
      let data: Uint8Array = r.value;
      while (data.length > 0) data = data.subarray(await conn.write(data));
    }
    return "";
  } catch (error) {
    return ` (reply not delivered: ${(error as Error).name})`;
  }
}

/** TCPServer + ThreadingMixIn: each accepted client gets a new Worker. */
export class ThreadedTCPServer {
  /** The running handler Workers, each with the function that stops it. */
  readonly workers = new Map<Worker, (outcome: string) => void>();
  peak = 0;
  #threads = 0;
  #handlers = new Set<Promise<void>>();
  #closing = false;

  constructor(
    readonly listener: Deno.TcpListener,
    readonly timeoutMs = TIMEOUT_S * 1000,
    readonly log: (line: string) => void = () => {},
  ) {}

  async serveForever(): Promise<void> {
    while (!this.#closing) {
      // At the limit, wait for a handler to finish before accepting again.
      while (this.workers.size >= MAX_THREADS && !this.#closing) {
        await Promise.race(this.#handlers);
      }
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (error) {
        if (this.#closing) break;
        this.log(`accept failed: ${(error as Error).message}`);
        continue;
      }
      const handler = this.processRequest(conn)
        .finally(() => this.#handlers.delete(handler));
      this.#handlers.add(handler);
    }
    await Promise.all(this.#handlers);
  }

  /** ThreadingMixIn.process_request(): a new thread serves this client. */
  async processRequest(conn: Deno.TcpConn): Promise<void> {
    const client = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    const name = `Thread-${++this.#threads}`;
    const worker = new Worker(import.meta.url, { type: "module", name });
    // The Worker's two ends of the connection; the server pumps them.
    const request = new TransformStream<Uint8Array, Uint8Array>();
    const reply = new TransformStream<Uint8Array, Uint8Array>();
    const requests = request.writable.getWriter();
    const replies = reply.readable.getReader();
    const upstream = pumpIn(conn, requests);
    const delivered = pumpOut(replies, conn);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = new Promise<string>((resolve) => {
      this.workers.set(worker, resolve);
      // Done once the Worker has answered and its reply has reached the socket.
      worker.onmessage = (event) =>
        delivered.then((note) => resolve(event.data + note));
      worker.onerror = (event) => {
        event.preventDefault(); // else the error would end the whole server
        resolve(`failed: ${event.message}`);
      };
      timer = setTimeout(
        () => resolve(`timed out after ${this.timeoutMs / 1000} s`),
        this.timeoutMs,
      );
    });
    this.peak = Math.max(this.peak, this.workers.size);
    const running = () => `(${this.workers.size} of ${MAX_THREADS} running)`;
    this.log(`${name} started for ${client} ${running()}`);
    const streams = { readable: request.readable, writable: reply.writable };
    worker.postMessage(streams, [streams.readable, streams.writable]);
    const end = await outcome;
    clearTimeout(timer);
    worker.terminate();
    conn.close();
    // Settle both pumps even if the Worker left its ends open.
    await Promise.all([requests.abort(), replies.cancel()]).catch(() => {});
    await Promise.all([upstream, delivered]);
    this.workers.delete(worker);
    this.log(`${name} ${end}; terminated ${running()}`);
  }

  /** Stops accepting and terminates every handler Worker. */
  async shutdown(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.listener.close();
    for (const stop of this.workers.values()) stop("stopped by shutdown");
    await Promise.all(this.#handlers);
  }
}

/** The book's __main__: a server, three clients in turn, clean up. */
export async function main(server: ThreadedTCPServer): Promise<void> {
  const { hostname: ip, port } = server.listener.addr;
  const serving = server.serveForever();
  console.log("Server loop running on thread: MainThread");

  await client(ip, port, "Hello from client 1");
  await client(ip, port, "Hello from client 2");
  await client(ip, port, "Hello from client 3");

  await server.shutdown();
  await serving;
}

/** --serve: the server alone, until Ctrl-C or SIGTERM. */
export async function serve(server: ThreadedTCPServer): Promise<void> {
  const stop = () => {
    console.log(`Shutting down: terminating ${server.workers.size} threads...`);
    server.shutdown();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const { hostname, port } = server.listener.addr;
  console.log("Server loop running on thread: MainThread");
  console.log(`Listening on ${hostname}:${port}`);
  await server.serveForever();
  const { peak, workers } = server;
  console.log(`Peak: ${peak} of ${MAX_THREADS}; ${workers.size} left running`);
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${NAME}: error: ${message}`);
  Deno.exit(2);
}

if (import.meta.main && IN_WORKER) {
  // A handler thread: wait for the connection's streams, handle, report.
  const thread = globalThis as unknown as Worker & { name: string };
  thread.onmessage = async ({ data }: MessageEvent) => {
    const end = await handle(thread.name, data.readable, data.writable)
      .catch((error) => `failed: ${error.name}: ${error.message}`);
    thread.postMessage(end);
  };
} else if (import.meta.main) {
  // Imported here, not at the top, so that handler Workers never load it.
  const { parseArgs } = await import("@std/cli/parse-args");
  const args = parseArgs(Deno.args, {
    string: ["port", "timeout"],
    boolean: ["help", "serve"],
    alias: { h: "help" },
    default: { port: String(SERVER_PORT), timeout: String(TIMEOUT_S) },
    unknown: (arg: string) => argumentError(`unrecognized arguments: ${arg}`),
  });
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const port = Number(args.port), timeout = Number(args.timeout);
  if (!/^\d+$/.test(args.port) || port > 65535) {
    argumentError(`argument --port: invalid port value: '${args.port}'`);
  }
  if (!(timeout > 0 && timeout <= 3600)) {
    argumentError(`argument --timeout: invalid value: '${args.timeout}'`);
  }
  const path = import.meta.filename!;
  if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
    console.error(`Error: handler Workers need --allow-read=${NAME}`);
    Deno.exit(1);
  }
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: SERVER_HOST, port });
  } catch (error) {
    const reason = (error as Error).message;
    console.error(`Error: cannot listen on ${SERVER_HOST}:${port}: ${reason}`);
    Deno.exit(1);
  }
  const log = args.serve ? console.log : undefined; // demo: the book's lines
  const server = new ThreadedTCPServer(listener, timeout * 1000, log);
  await (args.serve ? serve(server) : main(server));
}
