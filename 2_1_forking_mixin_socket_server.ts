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
 * (denoland/deno#32696), and a spawned `deno run` given no permission flag
 * gets `-A`. The price of the relay: the server moves every byte, where the
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
const PREVIEW_BYTES = 32; // client data a trace line shows, at most
const HANDLER_MODE = "--handle-request"; // internal: be one handler process
const SELF = import.meta.filename!;
const HANDLER_PROCESS: Deno.CommandOptions = {
  args: ["run", "--no-config", "--no-prompt", SELF, HANDLER_MODE],
  stdin: "piped",
  stdout: "piped",
  stderr: "inherit", // the terminal it shares with the server
};
const NAME = "2_1_forking_mixin_socket_server.ts";
const USAGE =
  `usage: ${NAME} [-h] [--serve] [--port PORT] [--timeout SECS] [--trace]`;
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

/** Writes every byte: a write may take only part of a buffer. */
async function writeAll(to: Pick<Deno.Conn, "write">, data: Uint8Array) {
  while (data.length > 0) data = data.subarray(await to.write(data));
}

/** A client to test the forking server, on a connection main() opens. */
export class ForkedClient {
  constructor(readonly conn: Deno.TcpConn) {}

  /** Sends the echo message and prints the server's whole reply. */
  async run(): Promise<void> {
    const pid = `PID ${Deno.pid}`;
    console.log(`${pid} Sending echo message to the server : "${ECHO_MSG}"`);
    const message = encoder.encode(ECHO_MSG);
    await writeAll(this.conn, message);
    console.log(`Sent: ${message.length} characters, so far...`);
    const response = new Uint8Array(BUF_SIZE);
    const n = await this.conn.read(response) ?? 0;
    console.log(`${pid} received: ${decoder.decode(response.subarray(0, n))}`);
  }

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
export async function handle(spawnedAt?: number): Promise<void> {
  const pid = Deno.pid;
  const trace = spawnedAt === undefined
    ? undefined
    : (line: string) => console.error(`trace: ${line}`);
  trace?.(`handler PID ${pid} started, ${msSince(spawnedAt!)} after its spawn`);
  const data = new Uint8Array(BUF_SIZE);
  const n = await Deno.stdin.read(data);
  if (n === null) {
    trace?.(`handler PID ${pid} read end of file`);
    return console.error(`Handler PID ${pid}: client left without sending`);
  }
  trace?.(
    `handler PID ${pid} read ${n} bytes: ${preview(data.subarray(0, n))}`,
  );
  const prefix = encoder.encode(`${pid}: `);
  const response = new Uint8Array([...prefix, ...data.subarray(0, n)]);
  const said = `[current_process_id: data] = [${decoder.decode(response)}]`;
  console.error(`Server sending response ${said}`);
  await writeAll(Deno.stdout, response);
  trace?.(
    `handler PID ${pid} replied ${response.length} bytes: ${preview(response)}`,
  );
}

/** The client's bytes (conn.readable would close the socket at their EOF). */
async function* reads(conn: Deno.Conn) {
  const buffer = new Uint8Array(RELAY_SIZE);
  for (let n; (n = await conn.read(buffer)) !== null;) yield buffer.slice(0, n);
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

/** TCPServer + ForkingMixIn: each accepted client gets a new process. */
export class ForkingServer {
  readonly children = new Set<Deno.ChildProcess>();
  peak = 0;
  #handlers = new Set<Promise<void>>();
  #closing = false;

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

  async serveForever(): Promise<void> {
    while (!this.#closing) {
      // collect_children(): at max_children, wait for one to finish.
      while (this.children.size >= MAX_CHILDREN && !this.#closing) {
        await Promise.race(this.#handlers);
      }
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (error) {
        if (this.#closing) break; // shutdown() closed the listener
        // One client's failed accept must not end the server, nor delay the
        // next client: only a want of descriptors or memory is waited out.
        if (isOutOfResources(error as Error)) {
          this.log(
            `accept failed: ${
              (error as Error).message
            }; pausing ${ACCEPT_PAUSE_MS} ms`,
          );
          await new Promise((resume) => setTimeout(resume, ACCEPT_PAUSE_MS));
        } else {
          this.log(`accept failed: ${(error as Error).message}`);
        }
        continue;
      }
      this.trace?.(
        `accepted ${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`,
      );
      const handler = this.processRequest(conn).catch((error: Error) => {
        this.log(`no handler process: ${error.message}`); // spawn() failed
        conn.close();
      }).finally(() => this.#handlers.delete(handler));
      this.#handlers.add(handler);
    }
    await Promise.all(this.#handlers);
  }

  /** ForkingMixIn.process_request(): a child process serves this client. */
  async processRequest(conn: Deno.TcpConn): Promise<void> {
    const client = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    const spawnedAt = now();
    // Traced, the handler is told when it was spawned, to trace its start.
    const options = this.trace
      ? { ...HANDLER_PROCESS, args: [...HANDLER_PROCESS.args!, `${spawnedAt}`] }
      : HANDLER_PROCESS;
    const child = new Deno.Command(this.deno, options).spawn();
    this.trace?.(`spawned handler PID ${child.pid} for ${client}`);
    const pid = `Handler PID ${child.pid}`;
    this.peak = Math.max(this.peak, this.children.add(child).size);
    const running = () => `(${this.children.size} of ${MAX_CHILDREN} running)`;
    this.log(`${pid} started for ${client} ${running()}`);
    const timer = setTimeout(() => {
      this.log(`${pid} timed out after ${this.timeoutMs / 1000} s, killing it`);
      kill(child, "SIGKILL"); // its end closes the connection
    }, this.timeoutMs);
    // Relayed both ways; the connection stays ours to close.
    const upstream = ReadableStream.from(reads(conn)).pipeTo(child.stdin)
      .catch(() => {}); // the child exited (broken pipe) or conn closed
    const note = await child.stdout
      .pipeTo(conn.writable, { preventClose: true, preventAbort: true })
      .then(() => "", (error) => `, reply not delivered (${error.name})`);
    const { code, signal } = await child.status; // waitpid(): reaped
    this.trace?.(
      `reaped handler PID ${child.pid} (${signal ?? `code ${code}`}), ` +
        `${msSince(spawnedAt)} after its spawn`,
    );
    // Forgotten and logged at once: the log's count is the server's count.
    this.children.delete(child);
    clearTimeout(timer);
    const end = this.#closing && signal === "SIGTERM"
      ? "closed by server shutdown" // killed by shutdown(): not a failure
      : signal
      ? `was killed by ${signal}`
      : `exited with code ${code}`;
    this.log(`${pid} ${end}${note} ${running()}`);
    conn.close();
    await upstream;
  }

  /**
   * The one shutdown: stops accepting and kills every handler process;
   * serveForever reaps them. Idempotent: a terminal's Ctrl-C under `deno
   * task` delivers SIGINT twice (to the task runner, which passes it on, and
   * to this process), and the second call does nothing and prints nothing.
   */
  shutdown(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.log(`Shutting down: killing ${this.children.size} handlers...`);
    this.listener.close();
    for (const child of this.children) kill(child, "SIGTERM");
  }
}

/** The book's main(): a server, two clients one after the other, clean up. */
export async function main(server: ForkingServer): Promise<void> {
  const { hostname: ip, port } = server.listener.addr;
  const serving = server.serveForever();
  console.log(`Server loop running PID: ${Deno.pid}`);

  const client1 = new ForkedClient(await Deno.connect({ hostname: ip, port }));
  await client1.run();
  console.log("First client running");

  const client2 = new ForkedClient(await Deno.connect({ hostname: ip, port }));
  await client2.run();
  console.log("Second client running");

  server.shutdown();
  client1.shutdown();
  client2.shutdown();
  await serving;
}

/** --serve: the server alone, until Ctrl-C or SIGTERM. */
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
  const { peak, children: { size } } = server;
  console.log(`Peak: ${peak} of ${MAX_CHILDREN}; ${size} left running`);
}

/** A one-line error, exit 1; bad arguments exit 2 with argparse's usage. */
function fail(message: string, code: 1 | 2 = 1): never {
  if (code === 2) console.error(`${USAGE}\n${NAME}: error: ${message}`);
  else console.error(`Error: ${message}`);
  Deno.exit(code);
}

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
    unknown: (arg: string) => fail(`unrecognized arguments: ${arg}`, 2),
  });
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const port = Number(args.port), timeout = Number(args.timeout);
  if (!/^\d+$/.test(args.port) || port > 65535) {
    fail(`argument --port: invalid port value: '${args.port}'`, 2);
  }
  if (!(timeout > 0 && timeout <= 3600)) {
    fail(`argument --timeout: invalid value: '${args.timeout}'`, 2);
  }
  // The Deno to spawn: this very binary if allowed, else `deno` from PATH.
  const deno = [Deno.execPath(), "deno"].find((command) =>
    Deno.permissions.querySync({ name: "run", command }).state === "granted"
  ) ?? fail("handler processes need --allow-run=deno");
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: SERVER_HOST, port });
  } catch (e) {
    fail(`cannot listen on ${SERVER_HOST}:${port}: ${(e as Error).message}`);
  }
  const log = args.serve ? console.log : undefined; // demo: the book's lines
  const trace: ((line: string) => void) | undefined = args.trace
    ? (line) =>
      console.error(`trace: ${line}`)
    : undefined;
  const server = new ForkingServer(listener, deno, timeout * 1000, log, trace);
  if (args.serve) {
    await serve(server);
    // Exit now rather than when the event loop drains: while Deno tears the
    // runtime down it drops the signal listeners, and the second SIGINT of a
    // Ctrl-C under `deno task` (passed on by the task runner) could then
    // arrive to find none and kill this process with status 130.
    Deno.exit(0);
  }
  await main(server);
}
