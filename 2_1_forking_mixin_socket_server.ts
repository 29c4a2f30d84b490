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
 * From Python to Deno:
 * - `ForkingMixIn` forks per connection; the child inherits the socket and
 *   answers with its own PID. Deno cannot fork, nor pass a socket to another
 *   process (Node's handle passing lives in Deno's Node layer; this recipe
 *   stays on `Deno.listen` and `Deno.Command`). So `ForkingServer` spawns
 *   this file in handler mode, without permissions, and relays the
 *   connection to the child's stdin and its stdout back. The child is still
 *   its own process with its own PID and, like a forked child, shares the
 *   server's terminal: its log line goes to stderr.
 * - The handler loads only this file (`--no-config`; only the server imports
 *   the argument parser): it starts fast. It is this very Deno binary if
 *   `--allow-run` names its path, else `deno` from PATH (`--allow-run=deno`).
 * - `serve_forever()` on a thread becomes `serveForever()` on the event loop.
 *
 * Fixed from the book:
 * - The client printed `response[5:]`, a bytes repr cut in the wrong place:
 *   here the whole reply, as text. Data stays bytes, so a character cut at
 *   the 1024-byte read cannot throw. Every child is reaped (the book never).
 * - Like `max_children`, at most 40 handlers run; at 40 the server stops
 *   accepting, and clients wait in the kernel's backlog. A handler has
 *   `--timeout` seconds (default 10): a silent client cannot keep its slot.
 *   A client that leaves, or a handler that crashes or is killed, ends that
 *   one connection with a log line. With --serve, Ctrl-C or SIGTERM closes
 *   the listener, kills and reaps every handler, closes every connection
 *   and exits 0.
 */

const SERVER_HOST = "localhost";
const SERVER_PORT = 0; // the kernel picks a free port
const BUF_SIZE = 1024;
const ECHO_MSG = "Hello echo server!";
const MAX_CHILDREN = 40; // socketserver.ForkingMixIn.max_children
const TIMEOUT_S = 10;
const RELAY_SIZE = 16 * 1024;
const HANDLER_MODE = "--handle-request"; // internal: be one handler process
const SELF = import.meta.filename!;
const HANDLER_PROCESS: Deno.CommandOptions = {
  args: ["run", "--no-config", "--no-prompt", SELF, HANDLER_MODE],
  stdin: "piped",
  stdout: "piped",
  stderr: "inherit", // the terminal it shares with the server
};
const NAME = "2_1_forking_mixin_socket_server.ts";
const USAGE = `usage: ${NAME} [-h] [--serve] [--port PORT] [--timeout SECS]`;
const HELP = `${USAGE}

A process per connection. Without --serve: the book's demo, then exit.

options:
  -h, --help      show this help message and exit
  --serve         keep serving until Ctrl-C or SIGTERM
  --port PORT     port to listen on (default ${SERVER_PORT}: a free port)
  --timeout SECS  seconds one handler may take (default ${TIMEOUT_S})`;

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8, never throws
type Writer = { write(data: Uint8Array): Promise<number> };

/** Writes every byte: a write may take only part of a buffer. */
async function writeAll(to: Writer, data: Uint8Array): Promise<void> {
  while (data.length > 0) data = data.subarray(await to.write(data));
}

/** A client to test the forking server. */
export class ForkedClient {
  constructor(readonly conn: Deno.TcpConn) {}

  static async connect(ip: string, port: number): Promise<ForkedClient> {
    return new ForkedClient(await Deno.connect({ hostname: ip, port }));
  }

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
 */
export async function handle(): Promise<void> {
  const data = new Uint8Array(BUF_SIZE);
  const n = await Deno.stdin.read(data);
  const pid = Deno.pid;
  if (n === null) {
    return console.error(`Handler PID ${pid}: client left without sending`);
  }
  const prefix = encoder.encode(`${pid}: `);
  const response = new Uint8Array(prefix.length + n);
  response.set(prefix);
  response.set(data.subarray(0, n), prefix.length);
  const said = `[current_process_id: data] = [${decoder.decode(response)}]`;
  console.error(`Server sending response ${said}`);
  await writeAll(Deno.stdout, response);
}

/** The connection's bytes into the child's stdin, until either side ends. */
async function relayToChild(conn: Deno.TcpConn, stdin: WritableStream) {
  const writer = stdin.getWriter();
  const buffer = new Uint8Array(RELAY_SIZE);
  try {
    for (let n; (n = await conn.read(buffer)) !== null;) {
      await writer.write(buffer.slice(0, n));
    }
  } catch {
    // The child exited (broken pipe) or the connection was closed.
  }
  await writer.close().catch(() => {});
}

/** The child's stdout back to the client; a note if that failed. */
async function relayToClient(stdout: ReadableStream, conn: Deno.TcpConn) {
  try {
    for await (const chunk of stdout) await writeAll(conn, chunk);
    return "";
  } catch (error) {
    return `, reply not delivered (${(error as Error).name})`;
  }
}

/** Signals a child; one that has just exited makes kill() throw: ignored. */
function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // It exited meanwhile; processRequest reaps it.
  }
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

  /** ForkingMixIn.process_request(): a child process serves this client. */
  async processRequest(conn: Deno.TcpConn): Promise<void> {
    const client = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(this.deno, HANDLER_PROCESS).spawn();
    } catch (error) {
      this.log(`no handler for ${client}: ${(error as Error).message}`);
      return conn.close();
    }
    this.children.add(child);
    this.peak = Math.max(this.peak, this.children.size);
    const running = () => `(${this.children.size} of ${MAX_CHILDREN} running)`;
    this.log(`Handler PID ${child.pid} started for ${client} ${running()}`);
    const timer: ReturnType<typeof setTimeout> = setTimeout(() => {
      const after = `${this.timeoutMs / 1000} s`;
      this.log(`Handler PID ${child.pid} timed out after ${after}, killing it`);
      kill(child, "SIGKILL"); // its end closes the connection
    }, this.timeoutMs);
    const upstream = relayToChild(conn, child.stdin);
    const note = await relayToClient(child.stdout, conn);
    const status = await child.status;
    // Forgotten and logged at once: the log's count is the server's count.
    this.children.delete(child);
    clearTimeout(timer);
    const end = status.signal
      ? `was killed by ${status.signal}`
      : `exited with code ${status.code}`;
    this.log(`Handler PID ${child.pid} ${end}${note} ${running()}`);
    conn.close();
    await upstream;
  }

  /** Stops accepting, kills every handler process and reaps them all. */
  async shutdown(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.listener.close();
    for (const child of this.children) kill(child, "SIGTERM");
    await Promise.all(this.#handlers);
  }
}

/** The book's main(): a server, two clients one after the other, clean up. */
export async function main(server: ForkingServer): Promise<void> {
  const { hostname: ip, port } = server.listener.addr;
  const serving = server.serveForever();
  console.log(`Server loop running PID: ${Deno.pid}`);

  const client1 = await ForkedClient.connect(ip, port);
  await client1.run();
  console.log("First client running");

  const client2 = await ForkedClient.connect(ip, port);
  await client2.run();
  console.log("Second client running");

  await server.shutdown();
  client1.shutdown();
  client2.shutdown();
  await serving;
}

/** --serve: the server alone, until Ctrl-C or SIGTERM. */
export async function serve(server: ForkingServer): Promise<void> {
  const stop = () => {
    console.log(`Shutting down: killing ${server.children.size} handlers...`);
    server.shutdown();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const { hostname, port } = server.listener.addr;
  console.log(`Server loop running PID: ${Deno.pid}`);
  console.log(`Listening on ${hostname}:${port}`);
  await server.serveForever();
  const { peak, children } = server;
  console.log(
    `Peak: ${peak} of ${MAX_CHILDREN}; ${children.size} left running`,
  );
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${NAME}: error: ${message}`);
  Deno.exit(2);
}

if (import.meta.main && Deno.args[0] === HANDLER_MODE) {
  await handle();
} else if (import.meta.main) {
  // Imported here, not at the top, so that handler processes never load it.
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
  // The Deno to spawn: this very binary if allowed, else `deno` from PATH.
  const deno = [Deno.execPath(), "deno"].find((command) =>
    Deno.permissions.querySync({ name: "run", command }).state === "granted"
  );
  if (deno === undefined) {
    console.error(`Error: handler processes need --allow-run=deno`);
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
  const server = new ForkingServer(listener, deno, timeout * 1000, log);
  await (args.serve ? serve(server) : main(server));
}
