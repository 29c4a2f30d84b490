/**
 * Recipe 2_1: "Using ForkingMixIn in your socket server applications"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * The book's demo (a server and two clients in one script, then exit), and
 * the server alone, to talk to from a second terminal:
 *
 *     deno task 2_1
 *     deno task 2_1 --serve --port=8800 [--trace]
 *     echo "Hello echo server!" | nc -N localhost 8800   # <handler pid>: Hello echo server!
 *
 * (`deno task 2_1` is `deno run --allow-net=localhost,127.0.0.1
 * --allow-run=deno 2_1_forking_mixin_socket_server.ts`.)
 *
 * From Python to Deno: `ForkingMixIn` forks a child per connection, which
 * inherits the socket. Deno cannot fork, so the server spawns this file in
 * handler mode and relays the connection through the child's stdin and
 * stdout. The child has its own PID and logs to the terminal it shares with
 * the server, as a forked one would. (Why a relay and not a handed-over
 * socket: the README.)
 *
 * Fixed from the book:
 * - The client printed `response[5:]` of the bytes' repr: here the whole reply.
 * - Children are reaped; at most 40 run (`max_children`), then accepting waits.
 * - A handler has `--timeout` seconds (default 10); the client is told why.
 * - A client that leaves or resets, or a handler that dies, ends only its
 *   connection; only a want of descriptors or memory pauses accepting.
 * - Ctrl-C or SIGTERM kills and reaps every handler and exits 0, once.
 */

// book: import os
// book: import socket
// book: import threading
// book: import socketserver
// Nothing to import: Deno has the process id (Deno.pid), sockets
// (Deno.listen, Deno.connect) and processes (Deno.Command) built in; no
// thread is needed (see main()), and what socketserver does is written out
// in ForkingServer and in the sections below the book's code.

// book: SERVER_HOST = 'localhost'
const SERVER_HOST = "localhost";
// book: SERVER_PORT = 0 # tells the kernel to pickup a port dynamically
const SERVER_PORT = 0;
// book: BUF_SIZE = 1024
const BUF_SIZE = 1024;
// book: ECHO_MSG = 'Hello echo server!'
const ECHO_MSG = "Hello echo server!";

/** A client to test the forking server. */
// book: class ForkedClient():
export class ForkedClient {
  /**
   * The book's `__init__` connects. A constructor cannot await, so
   * `ForkedClient.connect(ip, port)` connects, then makes the client.
   */
  // book: def __init__(self, ip, port):
  // book: self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  // book: self.sock.connect((ip, port))
  static async connect(ip: string, port: number): Promise<ForkedClient> {
    return new ForkedClient(await Deno.connect({ hostname: ip, port }));
  }

  constructor(readonly sock: Deno.TcpConn) {}

  /** Sends the echo message and prints the server's whole reply. */
  // book: def run(self):
  async run(): Promise<void> {
    // book: current_process_id = os.getpid()
    const currentProcessId = Deno.pid;
    // book: print ('PID %s Sending echo message to the server : "%s"' % (current_process_id, ECHO_MSG))
    console.log(
      `PID ${currentProcessId} Sending echo message to the server : "${ECHO_MSG}"`,
    );
    // book: sent_data_length = self.sock.send(bytes(ECHO_MSG, 'utf-8'))
    const sentDataLength = await writeAll(this.sock, encoder.encode(ECHO_MSG));
    // book: print ("Sent: %d characters, so far..." %sent_data_length)
    console.log(`Sent: ${sentDataLength} characters, so far...`);
    // book: response = self.sock.recv(BUF_SIZE)
    // read() fills at most the buffer and resolves with the count, or null
    // at the server's end of file.
    const response = new Uint8Array(BUF_SIZE);
    const n = await this.sock.read(response) ?? 0;
    // book: print ("PID %s received: %s" % (current_process_id, response[5:]))
    // Fixed: the book cut its bytes' repr after 5 characters; here the
    // whole reply, as text.
    const text = decoder.decode(response.subarray(0, n));
    console.log(`PID ${currentProcessId} received: ${text}`);
  }

  // book: def shutdown(self):
  shutdown(): void {
    // book: self.sock.close()
    this.sock.close();
  }
}

/**
 * The request handler, run in a handler process (the book's forked child),
 * whose stdin and stdout are the connection: one read, one reply
 * `<pid>: <data>`. `spawnedAt` (given with --trace) is when the server
 * spawned this process: then it traces its steps on the shared stderr.
 */
// book: class ForkingServerRequestHandler(socketserver.BaseRequestHandler):
// book: def handle(self):
export async function handle(spawnedAt?: number): Promise<void> {
  // `trace?.(...)` evaluates its argument only when tracing is on, and then
  // the server passed the spawn time: `spawnedAt!` is safe there.
  const trace = spawnedAt === undefined ? undefined : traceLine;
  trace?.(
    `handler PID ${Deno.pid} started, ${msSince(spawnedAt!)} after its spawn`,
  );
  // book: data = str(self.request.recv(BUF_SIZE), 'utf-8')
  // The request is stdin; the bytes stay bytes until they are printed, so
  // a character cut at the 1024-byte read cannot throw.
  const data = new Uint8Array(BUF_SIZE);
  const n = await Deno.stdin.read(data);
  if (n === null) { // not in the book: the client sent nothing at all
    trace?.(`handler PID ${Deno.pid} read end of file`);
    console.error(`Handler PID ${Deno.pid}: client left without sending`);
    return;
  }
  trace?.(
    `handler PID ${Deno.pid} read ${plural(n, "byte")}: ` +
      preview(data.subarray(0, n)),
  );
  // book: current_process_id = os.getpid()
  const currentProcessId = Deno.pid;
  // book: response = '%s: %s' % (current_process_id, data)
  const prefix = encoder.encode(`${currentProcessId}: `);
  const response = new Uint8Array([...prefix, ...data.subarray(0, n)]);
  // book: print ("Server sending response [current_process_id: data] = [%s]" %response)
  // On stderr: stdout is the connection.
  const said = escapeControls(decoder.decode(response));
  console.error(
    `Server sending response [current_process_id: data] = [${said}]`,
  );
  // book: self.request.send(bytes(response, 'utf-8'))
  await writeAll(Deno.stdout, response);
  trace?.(
    `handler PID ${Deno.pid} replied ${plural(response.length, "byte")}: ` +
      preview(response),
  );
  // book: return
  // The process then exits, and its stdout, the reply, ends with it.
}

/**
 * TCPServer + ForkingMixIn: each accepted client gets a new process.
 * `options.log` (with --serve) gets a line per handler started and ended;
 * `options.trace` (with --trace) one per step of each connection.
 */
// book: class ForkingServer(socketserver.ForkingMixIn,
// book: socketserver.TCPServer,
// book: ):
export class ForkingServer {
  // book: pass
  // The book's class body is `pass`: socketserver does the work. Here it is
  // written out: serve_forever()'s accept loop, ForkingMixIn's
  // process_request() (a new process per client), collect_children() (the
  // limit, and reaping) and shutdown(); the relay of the bytes, which a
  // forked child does not need, is in the section "the relay" below.
  readonly children = new Set<Deno.ChildProcess>();
  peak = 0;
  readonly deno: string;
  readonly timeoutMs: number;
  readonly log: (line: string) => void;
  /**
   * With --trace, one line per step. Without it, each `this.trace?.(...)`
   * stops at the `?.`, before its line is even built.
   */
  readonly trace?: (line: string) => void;
  #handlers = new Set<Promise<void>>();
  #shuttingDown = false;

  constructor(readonly listener: Deno.TcpListener, options: ServerOptions) {
    this.deno = options.deno;
    this.timeoutMs = options.timeoutMs ?? TIMEOUT_S * 1000;
    this.log = options.log ?? (() => {});
    this.trace = options.trace;
  }

  /** socketserver's serve_forever(): accept, and fork for each client. */
  async serveForever(): Promise<void> {
    while (!this.#shuttingDown) {
      await this.#collectChildren();
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
      // served, as serve_forever() does once it has forked. The promise is
      // kept, to wait on at the limit and at the end, and forgotten once
      // done: `finally` can name `handler`, since a promise's callbacks
      // never run before the statement that made it has finished.
      const handler = this.processRequest(conn).catch((error: Error) => {
        this.log(`handler failed: ${error.message}`); // e.g. spawn() failed
        closeQuietly(conn);
      }).finally(() => this.#handlers.delete(handler));
      this.#handlers.add(handler);
    }
    await Promise.all(this.#handlers);
  }

  /** ForkingMixIn.process_request(): a new process serves this client. */
  async processRequest(conn: Deno.TcpConn): Promise<void> {
    const client = address(conn.remoteAddr);
    // os.fork(), in Deno: a new process runs this file in handler mode.
    const spawnedAt = now();
    const child = spawnHandler(this.deno, this.trace ? spawnedAt : undefined);
    this.trace?.(`spawned handler PID ${child.pid} for ${client}`);
    const name = `Handler PID ${child.pid}`;
    this.children.add(child);
    this.peak = Math.max(this.peak, this.children.size);
    this.log(`${name} started for ${client} ${this.#running()}`);
    let timedOut = false;
    const timer = killAfter(child, this.timeoutMs, () => {
      timedOut = true;
      this.log(
        `${name} timed out after ${this.timeoutMs / 1000} s, killing it`,
      );
    });
    // The child serves the connection through its stdin and stdout; the
    // reply ends when the child exits.
    const request = relayRequest(conn, child);
    const note = await relayReply(child, conn);
    const { code, signal } = await child.status; // os.waitpid(): reaped
    this.trace?.(
      `reaped handler PID ${child.pid} (${signal ?? `code ${code}`}), ` +
        `${msSince(spawnedAt)} after its spawn`,
    );
    // Forgotten and logged at once: the log's count is the server's count.
    this.children.delete(child);
    clearTimeout(timer);
    const end = this.#howItEnded(code, signal);
    this.log(`${name} ${end}${note} ${this.#running()}`);
    if (timedOut) await tellClient(conn, timeoutLine(this.timeoutMs));
    closeQuietly(conn);
    await request;
  }

  /**
   * The one shutdown: stops accepting and kills every handler process;
   * serveForever reaps them. Idempotent: a terminal's Ctrl-C under `deno
   * task` delivers SIGINT twice (to the task runner, which passes it on, and
   * to this process), and the second call does nothing and prints nothing.
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    const handlers = plural(this.children.size, "handler");
    this.log(`Shutting down: killing ${handlers}...`);
    this.listener.close();
    for (const child of this.children) kill(child, "SIGTERM");
  }

  /**
   * collect_children(): at max_children, wait for one to finish. Each
   * handler is a promise that settles when its child has been reaped;
   * Promise.race settles with the first of them to settle, as
   * os.waitpid(-1, 0) returns for the first child to exit. Meanwhile nobody
   * accepts, and new clients wait in the kernel's backlog.
   */
  async #collectChildren(): Promise<void> {
    while (this.children.size >= MAX_CHILDREN && !this.#shuttingDown) {
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

  /** How many handlers run, for the log: `(3 of 40 running)`. */
  #running(): string {
    return `(${this.children.size} of ${MAX_CHILDREN} running)`;
  }

  /** How a reaped handler ended, for its log line. */
  #howItEnded(code: number, signal: Deno.Signal | null): string {
    if (this.#shuttingDown && signal === "SIGTERM") {
      return "closed by server shutdown"; // shutdown() killed it: no failure
    }
    return signal ? `was killed by ${signal}` : `exited with code ${code}`;
  }
}

/**
 * The book's main(): a server on a background thread, two clients one after
 * the other, then clean up. `options` are the command line's.
 */
// book: def main():
export async function main(options: Options): Promise<void> {
  // book: server = ForkingServer((SERVER_HOST, SERVER_PORT), ForkingServerRequestHandler)
  // The handler is not passed in: it is this file, run in handler mode.
  const server = new ForkingServer(listen(options.port), options);
  // book: ip, port = server.server_address # Retrieve the port number
  const { hostname: ip, port } = server.listener.addr;
  // book: server_thread = threading.Thread(target=server.serve_forever)
  // book: server_thread.setDaemon(True) # don't hang on exit
  // book: server_thread.start()
  // No thread is needed: serveForever() runs whenever this function awaits,
  // on the same event loop, and `serving` settles when it has finished.
  const serving = server.serveForever();
  // book: print ("Server loop running PID: %s" %os.getpid())
  console.log(`Server loop running PID: ${Deno.pid}`);

  // book: client1 =  ForkedClient(ip, port)
  // book: client1.run()
  const client1 = await ForkedClient.connect(ip, port);
  await client1.run();
  // book: print("First client running")
  console.log("First client running");

  // book: client2 =  ForkedClient(ip, port)
  // book: client2.run()
  const client2 = await ForkedClient.connect(ip, port);
  await client2.run();
  // book: print("Second client running")
  console.log("Second client running");

  // book: server.shutdown()
  // book: client1.shutdown()
  // book: client2.shutdown()
  // book: server.socket.close()
  // shutdown() also closes the listening socket; then the loop ends.
  server.shutdown();
  client1.shutdown();
  client2.shutdown();
  await serving;
}

// --- Not in the book: the relay behind ForkingMixIn ---
// A forked child inherits the socket. Deno cannot fork, so each handler is
// a new Deno process running this file, and the server moves the
// connection's bytes to its stdin and from its stdout.

const HANDLER_MODE = "--handle-request"; // internal: be one handler process
const RELAY_SIZE = 16 * 1024;
// A handler process is `deno run` of this same file in handler mode. Given
// no --allow-* flag it has no permission at all, and needs none: it only
// reads its stdin and writes its stdout, which the server pipes to and from
// the socket. --no-config keeps it from loading this project's deno.json,
// which it does not need; --no-prompt makes a permission it lacks fail at
// once instead of asking on the terminal it shares with the server.
const HANDLER_PROCESS: Deno.CommandOptions = {
  args: [
    "run",
    "--no-config",
    "--no-prompt",
    import.meta.filename!,
    HANDLER_MODE,
  ],
  stdin: "piped",
  stdout: "piped",
  stderr: "inherit", // the terminal it shares with the server
};

/**
 * Starts one handler process with `deno` (a path or a name on PATH). Traced,
 * it is told when it was spawned (`spawnedAt`), to trace its own start.
 *
 * spawn() starts the process and returns at once, before the new Deno has
 * loaded this file. With stdin and stdout "piped", `child.stdin` is a
 * WritableStream into the child's stdin and `child.stdout` a ReadableStream
 * of what it prints; `child.status` settles when it has exited and been
 * reaped (waitpid), with its exit code or signal.
 */
function spawnHandler(deno: string, spawnedAt?: number): Deno.ChildProcess {
  let options = HANDLER_PROCESS;
  if (spawnedAt !== undefined) {
    options = { ...options, args: [...options.args!, String(spawnedAt)] };
  }
  return new Deno.Command(deno, options).spawn();
}

/**
 * The client's bytes into the child's stdin, until the client's end of file
 * (then the child's stdin is closed, so its read sees end of file too).
 * `pipeTo` reads a stream to its end and writes each chunk to a writable
 * stream, waiting for each write (backpressure: a slow reader slows the
 * source); `ReadableStream.from` turns the reads() generator into a stream.
 * The pipe fails when the child has exited (a broken pipe) or the
 * connection was closed: either way this direction is over, so the
 * returned promise always resolves.
 */
function relayRequest(conn: Deno.Conn, child: Deno.ChildProcess) {
  return ReadableStream.from(reads(conn)).pipeTo(child.stdin).catch(() => {});
}

/**
 * The child's stdout into the connection, until the child exits. By default
 * pipeTo closes the destination when the source ends and aborts it when the
 * source fails; either would close the socket under the server, so both are
 * prevented, and processRequest closes the connection once, after the reap.
 * Resolves with "" once the reply is sent, or with a note for the log line
 * when the client went away first.
 */
async function relayReply(
  child: Deno.ChildProcess,
  conn: Deno.Conn,
): Promise<string> {
  try {
    await child.stdout.pipeTo(conn.writable, {
      preventClose: true,
      preventAbort: true,
    });
    return "";
  } catch (error) {
    return `, reply not delivered (${(error as Error).name})`;
  }
}

/**
 * The client's bytes, as an async generator. Not `conn.readable`: a stream
 * that reaches the client's end of file closes the whole connection, and
 * the reply still has to go out (a client that sends, then half-closes,
 * like `nc -N`). `conn.read(buffer)` reads into our buffer and resolves with
 * the count, or null at end of file; while it waits it holds only that
 * buffer.
 */
async function* reads(conn: Deno.Conn): AsyncGenerator<Uint8Array> {
  const buffer = new Uint8Array(RELAY_SIZE);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return; // the client's end of file
    yield buffer.slice(0, n); // a copy: the next read reuses the buffer
  }
}

// --- Not in the book: bounds and faults ---

const MAX_CHILDREN = 40; // socketserver.ForkingMixIn.max_children
const TIMEOUT_S = 10; // seconds one handler may take (--timeout)
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const TELL_MS = 1000; // how long a last line to a client may take to write
const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards

/**
 * Kills `child` with SIGKILL after `ms` milliseconds, first calling
 * `onTimeout`; its end closes the connection. Returns the timer, for
 * clearTimeout() once the child has been reaped in time.
 */
function killAfter(
  child: Deno.ChildProcess,
  ms: number,
  onTimeout: () => void,
): ReturnType<typeof setTimeout> {
  return setTimeout(() => {
    onTimeout();
    kill(child, "SIGKILL");
  }, ms);
}

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

/** Signals a child; one that has just exited makes kill() throw: ignored. */
function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch { /* it exited meanwhile; processRequest reaps it */ }
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

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g; // all but \t \n \r

/**
 * Control characters a client sent, escaped (\x1b as "\x1b"), so that its
 * bytes cannot drive the terminal the server shares with its handlers.
 */
function escapeControls(text: string): string {
  return text.replace(
    CONTROL,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

// --- Not in the book: tracing ---

const PREVIEW_BYTES = 32; // client data a trace line shows, at most
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** A trace line, on stderr (stdout is the demo's, or a handler's reply). */
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
 * is when this process's clock started, in Unix-epoch milliseconds, so the
 * sum means the same in the server and in a handler process, and a handler
 * can tell how long after its spawn it started.
 */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Milliseconds since `since`, a time on the shared wall clock (see now()). */
function msSince(since: number): string {
  return `${(now() - since).toFixed(1)} ms`;
}

// --- Not in the book: the command line, --serve and permissions ---

const FILE = "2_1_forking_mixin_socket_server.ts";
const USAGE =
  `usage: ${FILE} [-h] [--serve] [--port PORT] [--timeout SECS] [--trace]`;
const HELP = `${USAGE}

options:
  -h, --help      show this help message and exit
  --serve         serve until Ctrl-C or SIGTERM (without: the book's demo)
  --port PORT     port to listen on (default ${SERVER_PORT}: a free port)
  --timeout SECS  seconds one handler may take (default ${TIMEOUT_S})
  --trace         print each step of each connection on stderr`;
/** The permissions the server runs with, as `deno task 2_1` grants them. */
const PERMISSIONS = "--allow-net=localhost,127.0.0.1 --allow-run=deno";

/** What ForkingServer is made with. */
export interface ServerOptions {
  /** The Deno that handler processes run: a path, or `deno` from PATH. */
  deno: string;
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
  // Imported here, not at the top, so that handler processes never load it.
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
  return {
    serve: args.serve,
    port,
    timeoutMs: timeout * 1000,
    deno: checkPermissions(argv),
    trace: args.trace ? traceLine : undefined,
  };
}

/**
 * The server needs the network (localhost and 127.0.0.1) and to run Deno
 * for its handlers: this very binary if --allow-run names it, else `deno`
 * from PATH, which it returns. Both are checked before anything starts, so
 * that a missing one is one error with the whole command that works, not a
 * flag at a time. querySync() asks a permission's state without prompting.
 */
function checkPermissions(argv: string[]): string {
  const granted = (permission: Deno.PermissionDescriptor) =>
    Deno.permissions.querySync(permission).state === "granted";
  const net = ["localhost", "127.0.0.1"]
    .every((host) => granted({ name: "net", host }));
  const deno = [Deno.execPath(), "deno"]
    .find((command) => granted({ name: "run", command }));
  if (net && deno) return deno;
  const args = argv.map((arg) => ` ${arg}`).join("");
  fail(
    `the server needs ${PERMISSIONS} (its handlers are deno processes); ` +
      `run it as\n  deno run ${PERMISSIONS} ${import.meta.filename}${args}\n` +
      `or, in the recipe's folder,\n  deno task 2_1${args}`,
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
  const server = new ForkingServer(listen(options.port), {
    ...options,
    log: console.log,
  });
  // Listening before the ready line, so a Ctrl-C right after it still gets
  // the shutdown. The listeners stay until the process exits: a listener
  // replaces Deno's default exit, so a late second SIGINT cannot kill with 130.
  const shutdown = () => server.shutdown();
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
  console.log(`Server loop running PID: ${Deno.pid}`);
  console.log(`Listening on ${address(server.listener.addr)}`);
  await server.serveForever();
  const left = server.children.size;
  console.log(`Peak: ${server.peak} of ${MAX_CHILDREN}; ${left} left running`);
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

// book: if __name__ == '__main__':
// First the handler mode (not in the book): the server starts this same
// file with HANDLER_MODE as its first argument to be one handler process,
// and, traced, the time it spawned it as the second.
if (import.meta.main && Deno.args[0] === HANDLER_MODE) {
  await handle(Deno.args[1] === undefined ? undefined : Number(Deno.args[1]));
} else if (import.meta.main) {
  const options = await parseOptions(Deno.args);
  if (options.serve) {
    await serve(options); // not in the book: the server alone
  } else {
    // book: main()
    await main(options);
  }
}
