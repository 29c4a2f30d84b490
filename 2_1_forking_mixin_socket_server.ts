/**
 * Recipe 2_1: "Using ForkingMixIn in your socket server applications"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * The book's demo (a server and two clients in one script, then exit):
 *
 *     deno task 2_1
 *     # or: deno run --allow-net=localhost,127.0.0.1 --allow-run=deno 2_1_forking_mixin_socket_server.ts
 *
 * The server alone; then, from a second terminal, one exchange each:
 *
 *     deno task 2_1 --serve --port=8800
 *     echo "Hello echo server!" | nc -N localhost 8800   # <handler pid>: Hello echo server!
 *     telnet localhost 8800                             # type one line
 *
 * With `--trace`, each step of each connection is printed on stderr:
 *
 *     deno task 2_1 --serve --port=8800 --trace
 *
 * From Python to Deno: `ForkingMixIn` forks a child per connection, which
 * inherits the socket. Deno cannot fork, so the server spawns this file in
 * handler mode (no permissions, no config: it starts fast) and relays the
 * connection through the child's stdin and stdout. The child has its own PID
 * and logs to the terminal it shares with the server, as a forked one would.
 * It is this very Deno if `--allow-run` names it, else `deno` from PATH.
 *
 * Why a relay, when a socket can be handed over: on Unix, Deno's Node layer
 * passes an accepted socket to a child (`node:child_process` with an "ipc"
 * channel, then `child.send("socket", socket)`: the descriptor travels over
 * a Unix socket, SCM_RIGHTS), so the child would own it as a forked one does.
 * This recipe keeps the relay because it teaches the rest of ForkingMixIn
 * better: `send()` takes a `node:net` socket, not a `Deno.Conn`, so the
 * server would have to accept with `node:net`, whose server cannot stop
 * accepting at `max_children` and leave clients in the backlog as the book's
 * does; and a child with an IPC channel boots Deno's Node layer, which made
 * each connection about three times dearer here (an empty child: 32 ms
 * plain, 85-119 ms with the channel), in a chapter about what a connection
 * costs. It also needs `--allow-env`, is missing on Windows
 * (denoland/deno#32696), and a child that `fork()` starts with no
 * permission flags gets all of them, as with `-A`. The price of the relay: the server moves every byte, where the
 * book's parent forgets the connection once it has forked.
 *
 * Fixed from the book: the client printed `response[5:]`, a bytes repr cut
 * in the wrong place; here the whole reply, as text (data stays bytes, so a
 * character cut at the 1024-byte read cannot throw). Children are reaped (the
 * book never did). As with `max_children`, at most 40 handlers run, then
 * accepting pauses; each has `--timeout` seconds (default 10). A client that
 * leaves, or a handler that dies, ends only its connection, with a log line;
 * one that resets before it is accepted costs a log line and no pause (only
 * running out of descriptors or memory pauses accepting, 100 ms). Ctrl-C or
 * SIGTERM kills and reaps every handler, closes all, exits 0, once however
 * many signals come.
 */

const SERVER_HOST = "localhost";
const SERVER_PORT = 0; // the kernel picks a free port
const BUF_SIZE = 1024;
const ECHO_MSG = "Hello echo server!";
const MAX_CHILDREN = 40; // socketserver.ForkingMixIn.max_children
const TIMEOUT_S = 10;
const RELAY_SIZE = 16 * 1024;
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards
const PREVIEW_BYTES = 32; // client data a trace line shows, at most
const HANDLER_MODE = "--handle-request"; // internal: be one handler process
const SELF = import.meta.filename!;
// A handler process is `deno run` of this same file in handler mode. Given
// no --allow-* flag it has no permission at all, and needs none: it only
// reads its stdin and writes its stdout, which the server pipes to and from
// the socket. --no-config keeps it from loading this project's deno.json,
// which it does not need; --no-prompt makes a permission it lacks fail at
// once instead of asking on the terminal it shares with the server.
const HANDLER_PROCESS: Deno.CommandOptions = {
  args: ["run", "--no-config", "--no-prompt", SELF, HANDLER_MODE],
  stdin: "piped",
  stdout: "piped",
  stderr: "inherit", // the terminal it shares with the server
};
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

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8, never throws
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g; // all but \t \n \r
const hex = (c: string) =>
  `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;

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

/** Milliseconds since `since`, a time on the shared wall clock (see now()). */
function msSince(since: number): string {
  return `${(now() - since).toFixed(1)} ms`;
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

/**
 * Writes every byte. `write()` resolves with how many bytes it took, which
 * may be fewer than it was given (a full socket or pipe buffer), like
 * Python's `send()`; the book's `sendall()` is this loop.
 */
async function writeAll(to: Pick<Deno.Conn, "write">, data: Uint8Array) {
  let rest = data;
  while (rest.length > 0) {
    const written = await to.write(rest);
    rest = rest.subarray(written);
  }
}

/**
 * A client to test the forking server. The book's `__init__` connects; a
 * constructor cannot await, so main() connects and hands the connection in.
 */
// book: class ForkedClient():
export class ForkedClient {
  constructor(readonly conn: Deno.TcpConn) {}

  /** Sends the echo message and prints the server's whole reply. */
  // book: def run(self):
  async run(): Promise<void> {
    const pid = `PID ${Deno.pid}`;
    console.log(`${pid} Sending echo message to the server : "${ECHO_MSG}"`);
    const message = encoder.encode(ECHO_MSG);
    await writeAll(this.conn, message); // book: self.sock.send(...)
    console.log(`Sent: ${message.length} characters, so far...`);
    // book: response = self.sock.recv(BUF_SIZE). read() fills at most the
    // buffer and resolves with the count, or null at the server's EOF.
    const response = new Uint8Array(BUF_SIZE);
    const n = await this.conn.read(response) ?? 0;
    console.log(`${pid} received: ${decoder.decode(response.subarray(0, n))}`);
  }

  // book: def shutdown(self):
  shutdown(): void {
    this.conn.close();
  }
}

/**
 * ForkingServerRequestHandler.handle(), run in the handler process, whose
 * stdin and stdout are the connection: one read, one reply `<pid>: <data>`.
 * `spawnedAt` (given with --trace) is when the server spawned this process:
 * then it traces its own steps on the stderr it shares with the server.
 */
// book: class ForkingServerRequestHandler(...): def handle(self):
export async function handle(spawnedAt?: number): Promise<void> {
  const pid = Deno.pid;
  const trace = spawnedAt === undefined
    ? undefined
    : (line: string) => console.error(`trace: ${line}`);
  // `trace?.(...)` evaluates its argument only when tracing is on, and then
  // the server passed the spawn time: `spawnedAt!` is safe here.
  trace?.(`handler PID ${pid} started, ${msSince(spawnedAt!)} after its spawn`);
  // book: data = str(self.request.recv(BUF_SIZE), 'utf-8'). Here the
  // request is stdin, and the bytes stay bytes until they are printed.
  const data = new Uint8Array(BUF_SIZE);
  const n = await Deno.stdin.read(data);
  if (n === null) { // not in the book: the client sent nothing at all
    trace?.(`handler PID ${pid} read end of file`);
    console.error(`Handler PID ${pid}: client left without sending`);
    return;
  }
  trace?.(
    `handler PID ${pid} read ${n} bytes: ${preview(data.subarray(0, n))}`,
  );
  const prefix = encoder.encode(`${pid}: `);
  const response = new Uint8Array([...prefix, ...data.subarray(0, n)]);
  // Control characters a client sent are shown escaped (\x1b as "\x1b"), so
  // its bytes cannot drive the terminal the server shares with its handlers.
  const text = decoder.decode(response).replace(CONTROL, hex);
  const said = `[current_process_id: data] = [${text}]`;
  console.error(`Server sending response ${said}`); // book: print(...)
  await writeAll(Deno.stdout, response); // book: self.request.send(...)
  trace?.(
    `handler PID ${pid} replied ${response.length} bytes: ${preview(response)}`,
  );
}

/**
 * The client's bytes, as an async generator the relay turns into a stream.
 * Not `conn.readable`: a stream that reaches the client's EOF closes the
 * whole connection, and the reply still has to go out (a client that sends,
 * then half-closes, like `nc -N`). `conn.read(buffer)` reads into our buffer
 * and resolves with the count, or null at EOF; while it waits it holds only
 * that buffer.
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

/** Signals a child; one that has just exited makes kill() throw: ignored. */
function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch { /* it exited meanwhile; processRequest reaps it */ }
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
 * TCPServer + ForkingMixIn: each accepted client gets a new process.
 *
 * Not in the book: the book's class body is `pass`, because socketserver
 * does the work. This class is that work, written out: `serve_forever()`'s
 * accept loop, `process_request()`'s new process per client,
 * `collect_children()`'s limit and reaping, and the relay of the bytes,
 * which a forked child does not need (it inherits the socket).
 */
// book: class ForkingServer(socketserver.ForkingMixIn, socketserver.TCPServer):
export class ForkingServer {
  readonly children = new Set<Deno.ChildProcess>();
  peak = 0;
  #handlers = new Set<Promise<void>>();
  #shuttingDown = false;

  constructor(
    readonly listener: Deno.TcpListener,
    readonly deno: string,
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
      // collect_children(): at max_children, wait for one to finish. Each
      // handler is a promise that settles when its child has been reaped;
      // Promise.race settles with the first of them to settle, as
      // os.waitpid(-1, 0) returns for the first child to exit. Meanwhile
      // nobody accepts, and new clients wait in the kernel's backlog.
      while (this.children.size >= MAX_CHILDREN && !this.#shuttingDown) {
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

  /** ForkingMixIn.process_request(): a child process serves this client. */
  // book (socketserver): ForkingMixIn.process_request(), where it forks
  async processRequest(conn: Deno.TcpConn): Promise<void> {
    const client = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    const spawnedAt = now();
    let options = HANDLER_PROCESS;
    if (this.trace) {
      // Traced, the handler is told when it was spawned, to trace its start.
      const args = [...HANDLER_PROCESS.args!, String(spawnedAt)];
      options = { ...HANDLER_PROCESS, args };
    }
    // spawn() starts the process and returns at once, before the new Deno
    // has loaded this file. With stdin and stdout "piped", `child.stdin` is
    // a WritableStream into the child's stdin and `child.stdout` a
    // ReadableStream of what it prints; `child.status` settles when it has
    // exited and been reaped (waitpid), with its exit code or signal.
    const child = new Deno.Command(this.deno, options).spawn();
    this.trace?.(`spawned handler PID ${child.pid} for ${client}`);
    const pid = `Handler PID ${child.pid}`;
    this.children.add(child);
    this.peak = Math.max(this.peak, this.children.size);
    const running = () => `(${this.children.size} of ${MAX_CHILDREN} running)`;
    this.log(`${pid} started for ${client} ${running()}`);
    const timer = setTimeout(() => {
      this.log(`${pid} timed out after ${this.timeoutMs / 1000} s, killing it`);
      kill(child, "SIGKILL"); // its end closes the connection
    }, this.timeoutMs);
    // Not in the book: the relay, both ways. `pipeTo` reads a stream to
    // its end and writes each chunk to a writable stream, waiting for each
    // write (backpressure: a slow reader slows the source).
    //
    // Client to handler: `ReadableStream.from` turns the reads() generator
    // into a stream; at the client's EOF pipeTo closes the child's stdin,
    // so the handler's read sees EOF too. It rejects when the child has
    // exited (a broken pipe) or the connection was closed: either way this
    // direction is over, so the rejection is dropped.
    const upstream = ReadableStream.from(reads(conn)).pipeTo(child.stdin)
      .catch(() => {});
    // Handler to client: the child's stdout into the connection. By default
    // pipeTo closes the destination when the source ends and aborts it when
    // the source fails; either would close the socket under us, so both are
    // prevented, and the connection is closed below, once, after the reap.
    // This pipe ends when the child's stdout does (it exited), and rejects
    // if the client went away first: then the log line says so.
    let note = "";
    try {
      await child.stdout.pipeTo(conn.writable, {
        preventClose: true,
        preventAbort: true,
      });
    } catch (error) {
      note = `, reply not delivered (${(error as Error).name})`;
    }
    const { code, signal } = await child.status; // waitpid(): reaped
    const how = signal ?? `code ${code}`;
    this.trace?.(
      `reaped handler PID ${child.pid} (${how}), ` +
        `${msSince(spawnedAt)} after its spawn`,
    );
    // Forgotten and logged at once: the log's count is the server's count.
    this.children.delete(child);
    clearTimeout(timer);
    let end: string;
    if (this.#shuttingDown && signal === "SIGTERM") {
      end = "closed by server shutdown"; // shutdown() killed it: no failure
    } else if (signal) {
      end = `was killed by ${signal}`;
    } else {
      end = `exited with code ${code}`;
    }
    this.log(`${pid} ${end}${note} ${running()}`);
    closeQuietly(conn);
    await upstream;
  }

  /**
   * The one shutdown: stops accepting and kills every handler process;
   * serveForever reaps them. Idempotent: a terminal's Ctrl-C under `deno
   * task` delivers SIGINT twice (to the task runner, which passes it on, and
   * to this process), and the second call does nothing and prints nothing.
   */
  // book (socketserver): shutdown(), and ForkingMixIn's server_close()
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.log(`Shutting down: killing ${this.children.size} handlers...`);
    this.listener.close();
    for (const child of this.children) kill(child, "SIGTERM");
  }
}

/** The book's main(): a server, two clients one after the other, clean up. */
// book: def main():
export async function main(server: ForkingServer): Promise<void> {
  const { hostname: ip, port } = server.listener.addr; // book: server_address
  // book: server_thread = threading.Thread(target=server.serve_forever).
  // No thread is needed: serveForever() runs whenever this function awaits,
  // on the same event loop, and `serving` settles when it has finished.
  const serving = server.serveForever();
  console.log(`Server loop running PID: ${Deno.pid}`);

  // book: client1 = ForkedClient(ip, port)
  const client1 = new ForkedClient(await Deno.connect({ hostname: ip, port }));
  await client1.run();
  console.log("First client running");

  const client2 = new ForkedClient(await Deno.connect({ hostname: ip, port }));
  await client2.run();
  console.log("Second client running");

  // book: # Clean them up
  server.shutdown();
  client1.shutdown();
  client2.shutdown();
  await serving;
}

/** --serve: the server alone, until Ctrl-C or SIGTERM. Not in the book. */
export async function serve(server: ForkingServer): Promise<void> {
  // Listening before the ready line, so a Ctrl-C right after it still gets
  // the shutdown. The listeners stay until the process exits: a listener
  // replaces Deno's default exit, so a late second SIGINT cannot kill with 130.
  const shutdown = () => server.shutdown();
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
  const { hostname, port } = server.listener.addr;
  console.log(`Server loop running PID: ${Deno.pid}`);
  console.log(`Listening on ${hostname}:${port}`);
  await server.serveForever();
  const left = server.children.size;
  console.log(`Peak: ${server.peak} of ${MAX_CHILDREN}; ${left} left running`);
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

// book: if __name__ == '__main__':
// Not in the book: the handler mode. The server starts this same file with
// HANDLER_MODE as its first argument to be one handler process.
if (import.meta.main && Deno.args[0] === HANDLER_MODE) {
  const spawnedAt = Deno.args[1] === undefined
    ? undefined
    : Number(Deno.args[1]);
  await handle(spawnedAt);
} else if (import.meta.main) {
  // Imported here, not at the top, so that handler processes never load it.
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
  // The Deno to spawn: this very binary if allowed, else `deno` from PATH.
  // querySync() asks the permission state without prompting.
  const allowed = (command: string) =>
    Deno.permissions.querySync({ name: "run", command }).state === "granted";
  let deno: string;
  if (allowed(Deno.execPath())) deno = Deno.execPath();
  else if (allowed("deno")) deno = "deno";
  else fail("handler processes need --allow-run=deno");
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
  const server = new ForkingServer(listener, deno, timeout * 1000, log, trace);
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
