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
 * With `--trace`, each step of each connection is printed on stderr:
 *
 *     deno task 2_2 --serve --port=8800 --trace
 *
 * From Python to Deno: `ThreadingMixIn` starts a thread per connection; here
 * each gets a new `Worker`, a real OS thread with its own isolate, named like
 * Python's (`Thread-1`, ...) and running this file, so it needs `--allow-read`
 * of it (a Worker inherits the server's permissions: narrowing them needs an
 * unstable flag). A `Conn` cannot be sent to a Worker: the handler gets a
 * readable and a writable stream (transferred) and does its own reading and
 * writing, while the bytes pass through the accepting thread, which owns the
 * socket. It reads with `conn.read`: `conn.readable` would close the whole
 * connection at the client's EOF, and a client that half-closes after
 * sending, like `nc -N`, would lose its reply. `serve_forever()` on a thread
 * is `serveForever()` on the main thread ("MainThread", as Python says).
 * Every Worker loads and compiles this whole file again, comments included:
 * the explanations cost each Worker about 0.4 MB (6.9 MB against 6.5 MB with
 * them stripped, 40 Workers held; the README has the measurement).
 *
 * Fixed from the book: the reply carried `b'...'`, the repr of the bytes;
 * here the data itself, as bytes (a character cut at the 1024-byte read is
 * fine), printed as text. `ThreadingMixIn` has no limit; here at most 40
 * Workers run, then accepting pauses (clients wait in the backlog). A
 * handler has `--timeout` seconds (default 10). A Worker is terminated once
 * it has answered (or timed out), then its connection is closed; one that
 * fails ends only its connection, with a log
 * line; one that resets before it is accepted costs a log line and no pause
 * (only running out of descriptors or memory pauses accepting, 100 ms). With
 * --serve, Ctrl-C or SIGTERM closes the listener, terminates every Worker,
 * closes every connection and exits 0, once however many signals come.
 */

const SERVER_HOST = "localhost";
const SERVER_PORT = 0; // the kernel picks a free port
const BUF_SIZE = 1024;
const MAX_THREADS = 40;
const TIMEOUT_S = 10;
const RELAY_SIZE = 16 * 1024;
const PREVIEW_BYTES = 32; // client data a trace line shows, at most
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards
const FILE = "2_2_threading_mixin_socket_server.ts";
const USAGE =
  `usage: ${FILE} [-h] [--serve] [--port PORT] [--timeout SECS] [--trace]`;
const HELP = `${USAGE}

options:
  -h, --help      show this help message and exit
  --serve         serve until Ctrl-C or SIGTERM (without: the book's demo)
  --port PORT     port to listen on (default ${SERVER_PORT}: a free port)
  --timeout SECS  seconds one handler may take (default ${TIMEOUT_S})
  --trace         print each step of each connection on stderr`;

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8, never throws

/**
 * Client data as a trace line shows it: at most 32 bytes, in double quotes,
 * printable ASCII as itself and every other byte (and `"` and `\`) as \xNN,
 * then `...` if there was more.
 */
export function preview(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes.subarray(0, PREVIEW_BYTES)) {
    const plain = byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c;
    text += plain
      ? String.fromCharCode(byte)
      : `\\x${byte.toString(16).padStart(2, "0")}`;
  }
  return `"${text}${bytes.length > PREVIEW_BYTES ? "..." : ""}"`;
}

/**
 * The wall clock in milliseconds with a fraction: `performance.timeOrigin`
 * is when this thread's clock started (a Worker has its own), in Unix-epoch
 * milliseconds, so the sum means the same on every thread, and a handler
 * can tell how long after `new Worker()` it started.
 */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Milliseconds since `since`, a time from now(). */
function msSince(since: number): string {
  return `${(now() - since).toFixed(1)} ms`;
}

/** A client to test the threading server: send, print the reply, close. */
// book: def client(ip, port, message):
export async function client(ip: string, port: number, message: string) {
  const conn = await Deno.connect({ hostname: ip, port });
  try {
    // book: sock.sendall(bytes(message, 'utf-8')). write() resolves with how
    // many bytes it took, which may be fewer than it was given (a full
    // socket buffer), like Python's send(); sendall() is this loop.
    let rest = encoder.encode(message);
    while (rest.length > 0) {
      const written = await conn.write(rest);
      rest = rest.subarray(written);
    }
    // book: response = sock.recv(BUF_SIZE). read() fills at most the buffer
    // and resolves with the count, or null at the server's EOF.
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
 * outcome for the server's log. `trace`, with --trace, gets its steps.
 */
// book: class ThreadedTCPRequestHandler(...): def handle(self):
export async function handle(
  threadName: string,
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
  trace?: (line: string) => void,
): Promise<string> {
  // A stream is read through a reader and written through a writer, each
  // taken once (getReader / getWriter lock the stream to it).
  const writer = writable.getWriter();
  try {
    // book: data = self.request.recv(1024). One read() of the stream gives
    // the next chunk the server's thread read from the socket, or `done`
    // (value undefined) at the client's EOF.
    const { value } = await readable.getReader().read();
    if (!value) { // not in the book: the client sent nothing at all
      trace?.(`${threadName} read end of file`);
      return "client left without sending";
    }
    const data = value.subarray(0, BUF_SIZE); // recv(1024): at most 1024
    trace?.(`${threadName} read ${data.length} bytes: ${preview(data)}`);
    // book: response = "%s: %s" % (cur_thread.name, data)
    const prefix = encoder.encode(`${threadName}: `);
    const response = new Uint8Array([...prefix, ...data]);
    // book: self.request.sendall(...). The write resolves when the stream
    // has accepted the chunk; the server's thread pipes it into the socket,
    // and the close in `finally` tells it that the reply is complete.
    await writer.write(response);
    trace?.(
      `${threadName} replied ${response.length} bytes: ${preview(response)}`,
    );
    return `replied with ${response.length} bytes`;
  } finally {
    await writer.close(); // the server then knows the reply is complete
  }
}

/**
 * The client's bytes, as an async generator that becomes the Worker's
 * request stream. Not `conn.readable`: a stream that reaches the client's
 * EOF closes the whole connection, and the reply still has to go out (a
 * client that sends, then half-closes, like `nc -N`). `conn.read(buffer)`
 * reads into our buffer and resolves with the count, or null at EOF; while
 * it waits it holds only that buffer.
 */
async function* reads(conn: Deno.Conn): AsyncGenerator<Uint8Array> {
  const buffer = new Uint8Array(RELAY_SIZE);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return; // the client's end of file
    yield buffer.slice(0, n); // a copy: the next read reuses the buffer
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
 * Closes a connection, ignoring "already closed": when a pipe into
 * `conn.writable` fails (the client reset), Deno closes the resource itself,
 * and a second close() would throw.
 */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/**
 * TCPServer + ThreadingMixIn: each accepted client gets a new Worker.
 *
 * Not in the book: the book's class body is `pass`, because socketserver
 * does the work. This class is that work, written out: `serve_forever()`'s
 * accept loop, `process_request()`'s new thread per client, and what the
 * book lacks: a limit, a deadline, and the bytes moved between the socket
 * and the Worker, which cannot hold a socket itself.
 */
// book: class ThreadedTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
export class ThreadedTCPServer {
  /** The running handler Workers, each with the function that stops it. */
  readonly workers = new Map<Worker, (outcome: string) => void>();
  peak = 0;
  #threads = 0;
  #handlers = new Set<Promise<void>>();
  #shuttingDown = false;

  constructor(
    readonly listener: Deno.TcpListener,
    readonly timeoutMs = TIMEOUT_S * 1000,
    readonly log: (line: string) => void = () => {},
    /**
     * With --trace, one line per step of each connection. Without it, each
     * `this.trace?.(...)` stops at the `?.`, before its line is even built.
     */
    readonly trace?: (line: string) => void,
  ) {}

  // book (socketserver): serve_forever()
  async serveForever(): Promise<void> {
    while (!this.#shuttingDown) {
      // Not in the book (ThreadingMixIn has no limit): at the limit, wait for
      // a handler to finish before accepting again. Each handler is a promise
      // that settles when its Worker is gone; Promise.race settles with the
      // first of them. Meanwhile new clients wait in the kernel's backlog.
      while (this.workers.size >= MAX_THREADS && !this.#shuttingDown) {
        await Promise.race(this.#handlers);
      }
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (error) {
        if (this.#shuttingDown) break; // shutdown() closed the listener
        // One client's failed accept must not end the server, nor delay the
        // next client: only a want of descriptors or memory is waited out.
        const message = (error as Error).message;
        if (isOutOfResources(error as Error)) {
          this.log(`accept failed: ${message}; pausing ${ACCEPT_PAUSE_MS} ms`);
          await new Promise((resume) => setTimeout(resume, ACCEPT_PAUSE_MS));
        } else {
          this.log(`accept failed: ${message}`);
        }
        continue;
      }
      this.trace?.(
        `accepted ${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`,
      );
      // Not awaited: the loop goes back to accept() while this client is
      // served, as serve_forever() does once the thread has started. The
      // promise is kept, to wait on at the limit and at the end, and
      // forgotten once done: `finally` can name `handler`, since a promise's
      // callbacks never run before the statement that made it has finished.
      const handler = this.processRequest(conn).catch((error: Error) => {
        this.log(`handler failed: ${error.message}`); // e.g. no Worker
        closeQuietly(conn);
      }).finally(() => this.#handlers.delete(handler));
      this.#handlers.add(handler);
    }
    await Promise.all(this.#handlers);
  }

  /** ThreadingMixIn.process_request(): a new thread serves this client. */
  // book (socketserver): ThreadingMixIn.process_request(), where it starts
  // a thread
  async processRequest(conn: Deno.TcpConn): Promise<void> {
    const client = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    this.#threads += 1;
    const name = `Thread-${this.#threads}`;
    const createdAt = now();
    // A Worker is a new OS thread running this file in an isolate of its
    // own: it shares no objects with this thread, only messages. `name`
    // becomes its globalThis.name, as Python's threads are named.
    const worker = new Worker(import.meta.url, { type: "module", name });
    this.trace?.(`new Worker ${name} for ${client}`);
    // A Conn cannot be sent to a Worker, but a stream can: the Worker gets a
    // readable of the client's bytes and a writable for its reply, and this
    // thread, which keeps the socket, moves the bytes between them.
    const readable = ReadableStream.from(reads(conn));
    // A TransformStream with no transform is a pipe: what is written to its
    // `writable` (the Worker's end) comes out of its `readable` (ours).
    const { readable: reply, writable } = new TransformStream<Uint8Array>();
    // The reply, piped into the socket. By default pipeTo closes the
    // destination when the source ends and aborts it when the source fails;
    // either would close the socket under us, so both are prevented, and the
    // connection is closed below, once. Aborting `relay` stops the pipe if
    // the Worker never closes its end (it timed out or was terminated).
    // `delivered` settles with "" when the reply has all been written, or
    // with a note for the log line when it could not be.
    const relay = new AbortController();
    const delivered = reply.pipeTo(conn.writable, {
      preventClose: true,
      preventAbort: true,
      signal: relay.signal,
    }).then(
      () => "", // the pipe finished: everything was written
      (error) => ` (reply not delivered: ${error.name})`, // the pipe failed
    );
    // Promise.withResolvers() gives a promise and the function that settles
    // it, apart: whichever comes first (the Worker's answer, its error, the
    // deadline, or shutdown() through `workers`) resolves the outcome, and
    // the later calls do nothing.
    const { promise: outcome, resolve } = Promise.withResolvers<string>();
    this.workers.set(worker, resolve);
    this.peak = Math.max(this.peak, this.workers.size);
    // Done once the Worker has answered and its reply has reached the socket.
    worker.onmessage = async ({ data }) => {
      const note = await delivered;
      resolve(data + note);
    };
    worker.onerror = (event) => {
      event.preventDefault(); // else the error would end the whole server
      resolve(`failed: ${event.message}`);
    };
    const timedOut = `timed out after ${this.timeoutMs / 1000} s`;
    const timer = setTimeout(() => resolve(timedOut), this.timeoutMs);
    const running = () => `(${this.workers.size} of ${MAX_THREADS} running)`;
    this.log(`${name} started for ${client} ${running()}`);
    // Traced, the handler is told when its Worker was made, to trace its start.
    const tracedSince = this.trace ? createdAt : undefined;
    // The second argument lists what is transferred rather than copied: the
    // two streams move to the Worker, and this thread can no longer use
    // them (it keeps `reply`, the other end of the pipe).
    worker.postMessage({ readable, writable, tracedSince }, [
      readable,
      writable,
    ]);
    const end = await outcome;
    clearTimeout(timer);
    worker.terminate(); // the thread stops at once, wherever it was
    this.trace?.(
      `terminated ${name}, ${msSince(createdAt)} after new Worker()`,
    );
    relay.abort(); // settles the relay even if the Worker left its end open
    closeQuietly(conn);
    await delivered;
    this.workers.delete(worker);
    this.log(`${name} ${end}; terminated ${running()}`);
  }

  /**
   * The one shutdown: stops accepting and stops every handler Worker (each
   * processRequest then terminates its Worker and closes its connection).
   * Idempotent: a terminal's Ctrl-C under `deno task` delivers SIGINT twice
   * (to the task runner, which passes it on, and to this process), and the
   * second call does nothing and prints nothing.
   */
  // book (socketserver): shutdown()
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.log(`Shutting down: terminating ${this.workers.size} threads...`);
    this.listener.close();
    for (const stop of this.workers.values()) stop("closed by server shutdown");
  }
}

/** The book's __main__: a server, three clients in turn, clean up. */
// book: if __name__ == "__main__":
export async function main(server: ThreadedTCPServer): Promise<void> {
  const { hostname: ip, port } = server.listener.addr; // book: server_address
  // book: server_thread = threading.Thread(target=server.serve_forever).
  // No thread is needed: serveForever() runs whenever this function awaits,
  // on the same event loop (the main thread, Python's "MainThread"), and
  // `serving` settles when it has finished.
  const serving = server.serveForever();
  console.log("Server loop running on thread: MainThread");

  // book: # Run clients
  await client(ip, port, "Hello from client 1");
  await client(ip, port, "Hello from client 2");
  await client(ip, port, "Hello from client 3");

  server.shutdown(); // book: # Server cleanup
  await serving;
}

/** --serve: the server alone, until Ctrl-C or SIGTERM. Not in the book. */
export async function serve(server: ThreadedTCPServer): Promise<void> {
  // Listening before the ready line, so a Ctrl-C right after it still gets
  // the shutdown. The listeners stay until the process exits: a listener
  // replaces Deno's default exit, so a late second SIGINT cannot kill with 130.
  const shutdown = () => server.shutdown();
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
  const { hostname, port } = server.listener.addr;
  console.log("Server loop running on thread: MainThread");
  console.log(`Listening on ${hostname}:${port}`);
  await server.serveForever();
  const { peak, workers } = server;
  console.log(`Peak: ${peak} of ${MAX_THREADS}; ${workers.size} left running`);
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

/** Any other error that stops the server before it starts: one line, exit 1. */
function fail(message: string): never {
  console.error(`Error: ${message}`);
  Deno.exit(1);
}

// Not in the book: the handler thread. `new Worker(import.meta.url)` runs this
// same file as a Worker's main module, so `import.meta.main` is true there
// too; only a Worker's global object has `WorkerGlobalScope`, which tells the
// two apart. (The book's thread runs handle() inside the same program.)
if (import.meta.main && "WorkerGlobalScope" in globalThis) {
  // A handler thread: wait for the connection's streams, handle, report.
  // Inside a Worker, globalThis is the Worker's side of the channel:
  // `onmessage` gets what the server posts, `postMessage` answers it.
  const thread = globalThis as unknown as Worker & { name: string };
  thread.onmessage = async ({ data }: MessageEvent) => {
    const since: number | undefined = data.tracedSince;
    const trace = since === undefined
      ? undefined
      : (line: string) => console.error(`trace: ${line}`);
    // `trace?.(...)` evaluates its argument only when tracing is on, and then
    // the server passed the creation time: `since!` is safe here.
    trace?.(`${thread.name} started, ${msSince(since!)} after new Worker()`);
    const end = await handle(thread.name, data.readable, data.writable, trace)
      .catch((error) => `failed: ${error.name}: ${error.message}`);
    thread.postMessage(end);
  };
} else if (import.meta.main) {
  // Imported here, not at the top, so that handler Workers never load it.
  const { parseArgs } = await import("@std/cli/parse-args");
  const args = parseArgs(Deno.args, {
    string: ["port", "timeout"],
    boolean: ["help", "serve", "trace"],
    alias: { h: "help" },
    default: { port: String(SERVER_PORT), timeout: String(TIMEOUT_S) },
    unknown: (arg: string) => argumentError(`unrecognized arguments: ${arg}`),
  });
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const port = Number(args.port);
  const timeout = Number(args.timeout);
  if (!/^\d+$/.test(args.port) || port > 65535) {
    argumentError(`argument --port: invalid port value: '${args.port}'`);
  }
  if (!(timeout > 0 && timeout <= 3600)) {
    argumentError(`argument --timeout: invalid value: '${args.timeout}'`);
  }
  const path = import.meta.filename!;
  if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
    fail(`handler Workers need --allow-read=${path}`);
  }
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: SERVER_HOST, port });
  } catch (e) {
    fail(`cannot listen on ${SERVER_HOST}:${port}: ${(e as Error).message}`);
  }
  const log = args.serve ? console.log : undefined; // demo: the book's lines
  const trace: ((line: string) => void) | undefined = args.trace
    ? (line) => console.error(`trace: ${line}`)
    : undefined;
  const server = new ThreadedTCPServer(listener, timeout * 1000, log, trace);
  if (args.serve) {
    await serve(server);
    // A terminal's Ctrl-C reaches `deno task` and this script at once, and
    // `deno task` then forwards it to the script: a second SIGINT comes a
    // moment after the first. While the listeners are in place it does
    // nothing (the shutdown is done), but one that comes while the process
    // is ending finds none and kills it with 130. So wait SIGNAL_GRACE_MS
    // for it, then exit at once (ending by itself, Deno would first tear the
    // runtime down and drop the listeners, a longer window).
    await new Promise((resume) => setTimeout(resume, SIGNAL_GRACE_MS));
    Deno.exit(0);
  }
  await main(server);
}
