/**
 * Recipe 2_2: "Using ThreadingMixIn in your socket server applications"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * The book's demo (a server and three clients in one script, then exit), and
 * the server alone, to talk to from a second terminal:
 *
 *     deno task 2_2
 *     deno task 2_2 --serve --port=8800 [--trace]
 *     echo "Hello from nc" | nc -N localhost 8800   # Thread-1: Hello from nc
 *
 * (`deno task 2_2` is `deno run --allow-net=localhost,127.0.0.1
 * --allow-read=2_2_threading_mixin_socket_server.ts` and this file: each
 * Worker loads it.)
 *
 * From Python to Deno: `ThreadingMixIn` starts a thread per connection; here
 * each gets a new `Worker`, a real OS thread with its own isolate, named like
 * Python's (`Thread-1`, ...) and running this file. A `Conn` cannot be sent
 * to a Worker: the handler gets a readable and a writable stream, while the
 * bytes pass through the main thread, which owns the socket and runs
 * `serveForever()` ("MainThread", as Python says; the README tells why the
 * numbers differ from the book's by one).
 *
 * Fixed from the book:
 * - The reply carried `b'...'`, the repr of the bytes: here the data itself.
 * - At most 40 Workers run (`ThreadingMixIn` has no limit), then accepting
 *   waits; one has `--timeout` seconds (default 10), and the client is told.
 * - A Worker that fails, or a client that resets, ends only its connection.
 * - Ctrl-C or SIGTERM terminates every Worker, closes all, exits 0, once.
 */

// book: import os
// book: import socket
// book: import threading
// book: import socketserver
// Nothing to import: Deno has sockets (Deno.listen, Deno.connect) and
// threads (Worker) built in, and what socketserver does is written out in
// ThreadedTCPServer and in the sections below the book's code.

// book: SERVER_HOST = 'localhost'
const SERVER_HOST = "localhost";
// book: SERVER_PORT = 0 # tells the kernel to pickup a port dynamically
const SERVER_PORT = 0;
// book: BUF_SIZE = 1024
const BUF_SIZE = 1024;

/** A client to test the threading server: send, print the reply, close. */
// book: def client(ip, port, message):
export async function client(ip: string, port: number, message: string) {
  // book: sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  // book: sock.connect((ip, port))
  const sock = await Deno.connect({ hostname: ip, port });
  // book: try:
  try {
    // book: sock.sendall(bytes(message, 'utf-8'))
    await writeAll(sock, encoder.encode(message));
    // book: response = sock.recv(BUF_SIZE)
    // read() fills at most the buffer and resolves with the count, or null
    // at the server's end of file.
    const response = new Uint8Array(BUF_SIZE);
    const n = await sock.read(response) ?? 0;
    // book: print ("Client received: %s" %response)
    // Fixed: the book printed the bytes' repr; here the text.
    console.log(`Client received: ${decoder.decode(response.subarray(0, n))}`);
  } finally {
    // book: finally:
    // book: sock.close()
    sock.close();
  }
}

/**
 * The request handler, run in the handler's Worker (the book's thread): one
 * read of up to 1024 bytes, one reply `<thread name>: <data>`. Returns the
 * outcome for the server's log. `trace`, with --trace, gets its steps.
 */
// book: class ThreadedTCPRequestHandler(socketserver.BaseRequestHandler):
// book: def handle(self):
export async function handle(
  threadName: string,
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
  trace?: (line: string) => void,
): Promise<string> {
  // The request is two streams: the client's bytes, and the reply's way
  // out. A stream is read through a reader and written through a writer,
  // each taken once (getReader / getWriter lock the stream to it).
  const writer = writable.getWriter();
  try {
    // book: data = self.request.recv(1024)
    // One read() gives the next chunk the main thread read from the
    // socket, or `done` (value undefined) at the client's end of file.
    const { value } = await readable.getReader().read();
    if (!value) { // not in the book: the client sent nothing at all
      trace?.(`${threadName} read end of file`);
      return "client left without sending";
    }
    const data = value.subarray(0, BUF_SIZE); // recv(1024): at most 1024
    trace?.(
      `${threadName} read ${plural(data.length, "byte")}: ${preview(data)}`,
    );
    // book: cur_thread = threading.current_thread()
    // The thread's name comes in as `threadName`: the Worker's own name.
    // book: response = "%s: %s" %(cur_thread.name, data)
    const prefix = encoder.encode(`${threadName}: `);
    const response = new Uint8Array([...prefix, ...data]);
    // book: self.request.sendall(bytes(response, 'utf-8'))
    // The write resolves when the stream has taken the chunk; the main
    // thread pipes it into the socket, and the close in `finally` tells it
    // that the reply is complete.
    await writer.write(response);
    trace?.(
      `${threadName} replied ${plural(response.length, "byte")}: ` +
        preview(response),
    );
    return `replied with ${plural(response.length, "byte")}`;
  } finally {
    await writer.close(); // the main thread then knows the reply is complete
  }
}

/**
 * TCPServer + ThreadingMixIn: each accepted client gets a new Worker.
 * `options.log` (with --serve) gets a line per thread started and ended;
 * `options.trace` (with --trace) one per step of each connection.
 */
// book: class ThreadedTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
export class ThreadedTCPServer {
  // book: pass
  // The book's class body is `pass`: socketserver does the work. Here it is
  // written out: serve_forever()'s accept loop, ThreadingMixIn's
  // process_request() (a new thread per client) and shutdown(); the limit,
  // the deadline and the relay of the bytes between the socket and the
  // Worker, which cannot hold a socket, are in the sections below.
  /** The running handler Workers, each with the function that stops it. */
  readonly workers = new Map<Worker, (outcome: string) => void>();
  peak = 0;
  readonly timeoutMs: number;
  readonly log: (line: string) => void;
  /**
   * With --trace, one line per step. Without it, each `this.trace?.(...)`
   * stops at the `?.`, before its line is even built.
   */
  readonly trace?: (line: string) => void;
  #threads = 0;
  #handlers = new Set<Promise<void>>();
  #shuttingDown = false;

  constructor(readonly listener: Deno.TcpListener, options: ServerOptions) {
    this.timeoutMs = options.timeoutMs ?? TIMEOUT_S * 1000;
    this.log = options.log ?? (() => {});
    this.trace = options.trace;
  }

  /** socketserver's serve_forever(): accept, and a thread for each client. */
  async serveForever(): Promise<void> {
    while (!this.#shuttingDown) {
      await this.#waitForRoom();
      const conn = await this.#accept();
      if (conn === null) break; // shutdown() closed the listener
      if (this.#shuttingDown) {
        // Accepted in the same turn as the signal: shutdown() has already
        // stopped every handler, so this one must not start.
        closeQuietly(conn);
        break;
      }
      this.trace?.(`accepted ${address(conn.remoteAddr)}`);
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
  async processRequest(conn: Deno.TcpConn): Promise<void> {
    const client = address(conn.remoteAddr);
    this.#threads += 1;
    const name = `Thread-${this.#threads}`;
    const createdAt = now();
    // threading.Thread(...).start(), in Deno: a Worker is a new OS thread
    // running this file in an isolate of its own. It shares no objects with
    // this thread, only messages. `name` becomes its globalThis.name.
    const worker = new Worker(import.meta.url, { type: "module", name });
    this.trace?.(`new Worker ${name} for ${client}`);
    // Whichever comes first (the Worker's answer, its error, the deadline,
    // or shutdown() through `workers`) settles `outcome`; later calls of
    // `resolve` do nothing. Promise.withResolvers() gives the two apart.
    const { promise: outcome, resolve } = Promise.withResolvers<string>();
    this.workers.set(worker, resolve);
    this.peak = Math.max(this.peak, this.workers.size);
    const tracedSince = this.trace ? createdAt : undefined;
    const relay = relayConnection(conn, worker, resolve, tracedSince);
    const timedOut = `timed out after ${this.timeoutMs / 1000} s`;
    const timer = setTimeout(() => resolve(timedOut), this.timeoutMs);
    this.log(`${name} started for ${client} ${this.#running()}`);
    const end = await outcome;
    clearTimeout(timer);
    worker.terminate(); // the thread stops at once, wherever it was
    this.trace?.(
      `terminated ${name}, ${msSince(createdAt)} after new Worker()`,
    );
    relay.stop(); // settles the relay even if the Worker left its end open
    if (end === timedOut) await tellClient(conn, timeoutLine(this.timeoutMs));
    closeQuietly(conn);
    await relay.delivered;
    this.workers.delete(worker);
    this.log(`${name} ${end}; terminated ${this.#running()}`);
  }

  /**
   * The one shutdown: stops accepting and stops every handler Worker (each
   * processRequest then terminates its Worker and closes its connection).
   * Idempotent: a terminal's Ctrl-C under `deno task` delivers SIGINT twice
   * (to the task runner, which passes it on, and to this process), and the
   * second call does nothing and prints nothing.
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    const threads = plural(this.workers.size, "thread");
    this.log(`Shutting down: terminating ${threads}...`);
    this.listener.close();
    for (const stop of this.workers.values()) stop("closed by server shutdown");
  }

  /**
   * Not in ThreadingMixIn, which has no limit: at MAX_THREADS, wait for a
   * handler to finish before accepting again. Each handler is a promise
   * that settles when its Worker is gone; Promise.race settles with the
   * first of them. Meanwhile new clients wait in the kernel's backlog.
   */
  async #waitForRoom(): Promise<void> {
    while (this.workers.size >= MAX_THREADS && !this.#shuttingDown) {
      await Promise.race(this.#handlers);
    }
  }

  /**
   * The next connection, or null once shutdown() has closed the listener.
   * One client's failed accept must not end the server, nor delay the next
   * client: only a want of descriptors or memory is waited out.
   */
  async #accept(): Promise<Deno.TcpConn | null> {
    while (!this.#shuttingDown) {
      try {
        return await this.listener.accept();
      } catch (error) {
        if (this.#shuttingDown) break;
        const message = (error as Error).message;
        if (isOutOfResources(error as Error)) {
          this.log(`accept failed: ${message}; pausing ${ACCEPT_PAUSE_MS} ms`);
          await new Promise((resume) => setTimeout(resume, ACCEPT_PAUSE_MS));
        } else {
          this.log(`accept failed: ${message}`);
        }
      }
    }
    return null;
  }

  /** How many Workers run, for the log: `(3 of 40 running)`. */
  #running(): string {
    return `(${this.workers.size} of ${MAX_THREADS} running)`;
  }
}

/**
 * The book's main block: a server on a background thread, three clients in
 * turn, then clean up. `options` are the command line's.
 */
// book: if __name__ == "__main__":
// The book runs the lines below at the top level of its script. Here they
// are this function, which the `if (import.meta.main)` block at the end of
// the file calls, once everything they use is defined.
export async function main(options: Options): Promise<void> {
  // book: server = ThreadedTCPServer((SERVER_HOST, SERVER_PORT), ThreadedTCPRequestHandler)
  // The handler is not passed in: each Worker runs handle() in this file.
  const server = new ThreadedTCPServer(listen(options.port), options);
  // book: ip, port = server.server_address # retrieve ip address
  const { hostname: ip, port } = server.listener.addr;

  // book: server_thread = threading.Thread(target=server.serve_forever)
  // book: server_thread.daemon = True
  // book: server_thread.start()
  // No thread is needed: serveForever() runs whenever this function awaits,
  // on the same event loop (the main thread, Python's "MainThread"), and
  // `serving` settles when it has finished.
  const serving = server.serveForever();
  // book: print ("Server loop running on thread: %s"  %server_thread.name)
  console.log("Server loop running on thread: MainThread");

  // book: client(ip, port, "Hello from client 1")
  // book: client(ip, port, "Hello from client 2")
  // book: client(ip, port, "Hello from client 3")
  await client(ip, port, "Hello from client 1");
  await client(ip, port, "Hello from client 2");
  await client(ip, port, "Hello from client 3");

  // book: server.shutdown()
  server.shutdown();
  await serving;
}

// --- Not in the book: the relay between the socket and a Worker ---
// A Python thread shares the socket with the server; a Worker shares
// nothing. So the main thread keeps the socket and moves its bytes to and
// from two streams that it transfers to the Worker.

const RELAY_SIZE = 16 * 1024;

/**
 * Hands `worker` the connection as two streams and relays the bytes:
 * a readable of the client's bytes, and a writable whose every chunk is
 * written to the socket. `done` is called with the outcome for the log
 * when the Worker answers (once its reply has reached the socket) or fails.
 * `tracedSince` (with --trace) is when the Worker was made, to trace its
 * start. Returns `delivered`, which settles with "" once the reply has all
 * been written or with a note for the log when it could not be, and
 * `stop()`, which ends the relay even if the Worker never closes its end
 * (it timed out or was terminated).
 */
function relayConnection(
  conn: Deno.Conn,
  worker: Worker,
  done: (outcome: string) => void,
  tracedSince?: number,
): { delivered: Promise<string>; stop: () => void } {
  const readable = ReadableStream.from(reads(conn));
  // A TransformStream with no transform is a pipe: what is written to its
  // `writable` (the Worker's end) comes out of its `readable` (ours).
  const { readable: reply, writable } = new TransformStream<Uint8Array>();
  // The reply, piped into the socket. By default pipeTo closes the
  // destination when the source ends and aborts it when the source fails;
  // either would close the socket under us, so both are prevented, and
  // processRequest closes the connection once. Aborting `relay` stops it.
  const relay = new AbortController();
  const delivered = reply.pipeTo(conn.writable, {
    preventClose: true,
    preventAbort: true,
    signal: relay.signal,
  }).then(
    () => "", // the pipe finished: everything was written
    (error) => ` (reply not delivered: ${error.name})`, // the pipe failed
  );
  worker.onmessage = async ({ data }) => done(data + await delivered);
  worker.onerror = (event) => {
    event.preventDefault(); // else the error would end the whole server
    done(`failed: ${event.message}`);
  };
  // The second argument lists what is transferred rather than copied: the
  // two streams move to the Worker, and this thread can no longer use them
  // (it keeps `reply`, the other end of the pipe).
  worker.postMessage({ readable, writable, tracedSince }, [
    readable,
    writable,
  ]);
  return { delivered, stop: () => relay.abort() };
}

/**
 * The client's bytes, as an async generator that becomes the Worker's
 * request stream. Not `conn.readable`: a stream that reaches the client's
 * end of file closes the whole connection, and the reply still has to go
 * out (a client that sends, then half-closes, like `nc -N`).
 * `conn.read(buffer)` reads into our buffer and resolves with the count, or
 * null at end of file; while it waits it holds only that buffer.
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
 * A handler thread's side. `new Worker(import.meta.url)` runs this same
 * file as the Worker's main module; the block at the end calls this there.
 * It waits for the connection's streams, runs handle(), and reports the
 * outcome. Inside a Worker, globalThis is the Worker's side of the channel:
 * `onmessage` gets what the server posts, `postMessage` answers it.
 */
function handlerThread(): void {
  const thread = globalThis as unknown as Worker & { name: string };
  thread.onmessage = async ({ data }: MessageEvent) => {
    const since: number | undefined = data.tracedSince;
    // `trace?.(...)` evaluates its argument only when tracing is on, and
    // then the server passed the creation time: `since!` is safe there.
    const trace = since === undefined ? undefined : traceLine;
    trace?.(`${thread.name} started, ${msSince(since!)} after new Worker()`);
    const end = await handle(thread.name, data.readable, data.writable, trace)
      .catch((error) => `failed: ${error.name}: ${error.message}`);
    thread.postMessage(end);
  };
}

// --- Not in the book: bounds and faults ---

const MAX_THREADS = 40; // Workers at once (ThreadingMixIn has no limit)
const TIMEOUT_S = 10; // seconds one handler may take (--timeout)
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const TELL_MS = 1000; // how long a last line to a client may take to write
const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards

/** What a client whose handler timed out is told before it is closed. */
function timeoutLine(ms: number): string {
  return `Timed out after ${ms / 1000} s: closing the connection.\r\n`;
}

/**
 * Writes one last line to a client about to be closed, waiting at most
 * TELL_MS: a client that reads nothing cannot hold the server (its close
 * then settles the write). Errors are ignored: the client may be gone.
 */
async function tellClient(conn: Deno.Conn, line: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((resume) => {
    timer = setTimeout(resume, TELL_MS);
  });
  await Promise.race([writeAll(conn, encoder.encode(line)), late])
    .catch(() => {});
  clearTimeout(timer);
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

/** Listens on SERVER_HOST, or stops with one line if the port is taken. */
function listen(port: number): Deno.TcpListener {
  try {
    return Deno.listen({ hostname: SERVER_HOST, port });
  } catch (e) {
    fail(`cannot listen on ${SERVER_HOST}:${port}: ${(e as Error).message}`);
  }
}

// --- Not in the book: bytes, text and addresses ---

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8, never throws

/**
 * Writes every byte and returns how many. `write()` resolves with how many
 * bytes it took, which may be fewer than it was given (a full socket or pipe
 * buffer), like Python's `send()`; the book's `sendall()` is this loop.
 */
async function writeAll(
  to: Pick<Deno.Conn, "write">,
  data: Uint8Array,
): Promise<number> {
  let rest = data;
  while (rest.length > 0) {
    const written = await to.write(rest);
    rest = rest.subarray(written);
  }
  return data.length;
}

/**
 * An address and port as one, the way URLs write them: `127.0.0.1:8800`,
 * and an IPv6 address in brackets, `[::1]:8800`, so its colons do not run
 * into the port's.
 */
export function address(addr: Deno.NetAddr): string {
  const { hostname, port } = addr;
  return hostname.includes(":")
    ? `[${hostname}]:${port}`
    : `${hostname}:${port}`;
}

/** A count and its noun in good English: `1 handler`, `3 handlers`. */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// --- Not in the book: tracing ---

const PREVIEW_BYTES = 32; // client data a trace line shows, at most
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** A trace line, on stderr (stdout is the demo's and the log's). */
function traceLine(line: string): void {
  console.error(`trace: ${line}`);
}

/**
 * Client data as a trace line shows it: at most 32 bytes, in double quotes,
 * then `...` if there was more. Valid UTF-8 that prints (Korean included)
 * shows as text; every other byte as \xNN: control characters, invalid or
 * cut UTF-8, and `"` and `\`, so the line cannot be misread or drive the
 * terminal. A character the 32-byte limit would cut is left to the `...`.
 */
export function preview(bytes: Uint8Array): string {
  const shown = bytes.subarray(0, PREVIEW_BYTES);
  let text = "";
  let i = 0;
  while (i < shown.length) {
    const size = utf8Size(bytes, i);
    if (size > 0 && i + size > shown.length) break; // cut by the limit
    const char = size > 0 ? strictUtf8.decode(bytes.subarray(i, i + size)) : "";
    if (size > 0 && !/[\p{C}\p{Zl}\p{Zp}"\\]/u.test(char)) {
      text += char;
      i += size;
    } else {
      text += `\\x${shown[i].toString(16).padStart(2, "0")}`;
      i += 1;
    }
  }
  return `"${text}${i < bytes.length ? "..." : ""}"`;
}

/**
 * The length of the valid UTF-8 character that starts at `bytes[i]`, or 0
 * if none does (a stray continuation byte, an overlong form, a surrogate, a
 * sequence cut short by the end of the data). The first byte tells the
 * length (utf8Lead); the strict decoder (`fatal`) throws on anything else
 * invalid.
 */
function utf8Size(bytes: Uint8Array, i: number): number {
  const size = utf8Lead(bytes[i]);
  if (size === 0 || i + size > bytes.length) return 0;
  try {
    strictUtf8.decode(bytes.subarray(i, i + size));
    return size;
  } catch {
    return 0;
  }
}

/**
 * How long a UTF-8 character is, told by its first byte: 1 for ASCII, 2, 3
 * or 4 for a lead byte, 0 for a byte no character starts with (0x80-0xbf
 * continue one; 0xc0, 0xc1 and 0xf5-0xff never appear in UTF-8).
 */
function utf8Lead(byte: number): number {
  if (byte < 0x80) return 1;
  if (byte < 0xc2) return 0;
  if (byte < 0xe0) return 2;
  if (byte < 0xf0) return 3;
  if (byte < 0xf5) return 4;
  return 0;
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

// --- Not in the book: the command line, --serve and permissions ---

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

/** What ThreadedTCPServer is made with. */
export interface ServerOptions {
  timeoutMs?: number;
  log?: (line: string) => void;
  trace?: (line: string) => void;
}

/** The command line's options. */
export interface Options extends ServerOptions {
  serve: boolean;
  port: number;
}

/**
 * Reads the command line as Python's argparse would: usage and a one-line
 * error, exit 2, for anything wrong; --help prints the help and exits 0.
 * Then checks the permissions (see checkPermissions).
 */
async function parseOptions(argv: string[]): Promise<Options> {
  // Imported here, not at the top, so that handler Workers never load it.
  const { parseArgs } = await import("@std/cli/parse-args");
  const args = parseArgs(argv, {
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
  checkPermissions(argv);
  return {
    serve: args.serve,
    port,
    timeoutMs: timeout * 1000,
    trace: args.trace ? traceLine : undefined,
  };
}

/**
 * The server needs the network (localhost and 127.0.0.1) and to read this
 * file, which every Worker loads (a Worker has the server's permissions:
 * narrowing them needs an unstable flag). Both are checked before anything
 * starts, so that a missing one is one error with the whole command that
 * works, not a flag or a prompt at a time. The path is the full one, so the
 * command works from any folder. querySync() asks a permission's state
 * without prompting.
 */
function checkPermissions(argv: string[]): void {
  const path = import.meta.filename!;
  const granted = (permission: Deno.PermissionDescriptor) =>
    Deno.permissions.querySync(permission).state === "granted";
  const net = ["localhost", "127.0.0.1"]
    .every((host) => granted({ name: "net", host }));
  if (net && granted({ name: "read", path })) return;
  const permissions = `--allow-net=localhost,127.0.0.1 --allow-read=${path}`;
  const args = argv.map((arg) => ` ${arg}`).join("");
  fail(
    `the server needs ${permissions} (its handler Workers load this file); ` +
      `run it as\n  deno run ${permissions} ${path}${args}\n` +
      `or, in the recipe's folder,\n  deno task 2_2${args}`,
  );
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

/** Any other error that stops the server before it starts: exit 1. */
function fail(message: string): never {
  console.error(`Error: ${message}`);
  Deno.exit(1);
}

/** --serve: the server alone, until Ctrl-C or SIGTERM; then exit 0. */
export async function serve(options: Options): Promise<void> {
  const server = new ThreadedTCPServer(listen(options.port), {
    ...options,
    log: console.log,
  });
  // Listening before the ready line, so a Ctrl-C right after it still gets
  // the shutdown. The listeners stay until the process exits: a listener
  // replaces Deno's default exit, so a late second SIGINT cannot kill with 130.
  const shutdown = () => server.shutdown();
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
  console.log("Server loop running on thread: MainThread");
  console.log(`Listening on ${address(server.listener.addr)}`);
  await server.serveForever();
  const { peak, workers } = server;
  console.log(`Peak: ${peak} of ${MAX_THREADS}; ${workers.size} left running`);
  // A terminal's Ctrl-C reaches `deno task` and this script at once, and
  // `deno task` then forwards it to the script: a second SIGINT comes a
  // moment after the first. While the listeners are in place it does
  // nothing (the shutdown is done), but one that comes while the process is
  // ending finds none and kills it with 130. So wait SIGNAL_GRACE_MS for it,
  // then exit at once (ending by itself, Deno would first tear the runtime
  // down and drop the listeners, a longer window).
  await new Promise((resume) => setTimeout(resume, SIGNAL_GRACE_MS));
  Deno.exit(0);
}

// The book's `if __name__ == "__main__":` is main() above. This file runs
// as the program and, in each Worker, as a handler thread: `import.meta.main`
// is true in both, and only a Worker's global object has `WorkerGlobalScope`.
if (import.meta.main && "WorkerGlobalScope" in globalThis) {
  handlerThread();
} else if (import.meta.main) {
  const options = await parseOptions(Deno.args);
  await (options.serve ? serve(options) : main(options));
}
