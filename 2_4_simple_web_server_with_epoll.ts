/**
 * Recipe 2_4: "Writing a simple web server using epoll"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * Run it, then open http://localhost:8800/ in a browser, or in a second
 * terminal use curl, nc or telnet (type "GET / HTTP/1.0", then Enter twice):
 *
 *     deno task 2_4 --port=8800
 *     # or: deno run --allow-net=localhost,127.0.0.1 2_4_simple_web_server_with_epoll.ts --port=8800
 *     curl http://localhost:8800/
 *     printf 'GET / HTTP/1.0\r\n\r\n' | nc -N localhost 8800
 *     telnet localhost 8800
 *
 * `localhost` is 127.0.0.1 only, as in the book; for IPv6 listen on ::1
 * (`deno task 2_4 --port=8800 --host=::1`, then `curl -6 'http://[::1]:8800/'`).
 * Any other host needs `--allow-net` for it; the error names the command.
 *
 * From Python to Deno: the book's `epoll.poll()` loop moves each connection
 * through three branches: EPOLLIN (append to `requests[fileno]` until the
 * head ends), EPOLLOUT (send the rest of `responses[fileno]`, shut down) and
 * EPOLLHUP (close, forget). Deno's event loop is itself epoll on Linux (kqueue
 * on macOS, IOCP on Windows), so this file keeps the dicts and the state
 * machine without the system call, and runs on every OS: `#poll` walks one
 * connection through `#onReadable`, `#onWritable` and `#onHangup`, and the
 * event loop runs all the walks at once. `fileno` is a connection number.
 * TCP_NODELAY, set on the listening socket in the book, is set on each
 * accepted connection in Deno (which sets SO_REUSEADDR itself).
 *
 * Fixed from the book: a client half-closing mid-request made its loop spin
 * (EPOLLIN, `recv() == b''`, forever) and a reset ended the server; here
 * either closes that connection only, with a log line. A head over 8 KiB
 * gets a 431; one not complete after --header-timeout seconds (default 10)
 * gets a close (slowloris). The response adds `Connection: close`, since the
 * server closes after it (wrk, for one, would reuse the connection). Only the
 * head is printed, control characters escaped.
 *
 * Speed: printed lines go out in one write every 10 ms, one timer checks all
 * deadlines, read buffers are reused. A write, a timer and a buffer per
 * request cost about 30%, 8% and 5% of the throughput.
 */

import { parseArgs } from "@std/cli/parse-args";
import { concat } from "@std/bytes/concat";

const SERVER_HOST = "localhost";
const HEAD_TIMEOUT = 10; // seconds
const MAX_REQUEST_BYTES = 8 * 1024;
const RECV_SIZE = 1024; // the book's recv(1024)
const spareChunks: Uint8Array[] = []; // read buffers to reuse, up to:
const MAX_SPARE_CHUNKS = 1024;
const ACCEPT_PAUSE_MS = 100; // out of descriptors: wait before accepting again
const NOTHING = new Uint8Array(0);
const LF = 0x0a, CR = 0x0d; // a head ends at EOL1 "\n\n" or EOL2 "\n\r\n"
const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8 with U+FFFD
const SERVER_RESPONSE = encoder.encode(
  "HTTP/1.1 200 OK\r\nDate: Mon, 1 Apr 2013 01:01:01 GMT\r\n" +
    "Content-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n" +
    "\r\n\nHello from Epoll Server!",
);
const TOO_LARGE_RESPONSE = encoder.encode(
  "HTTP/1.1 431 Request Header Fields Too Large\r\n" +
    "Content-Length: 0\r\nConnection: close\r\n\r\n",
);
const FILE = "2_4_simple_web_server_with_epoll.ts";
const USAGE = `usage: ${FILE} [-h] --port PORT [--host HOST] ` +
  "[--header-timeout SECONDS] [--trace]";
const HELP = `${USAGE}

Socket Server Example with Epoll, ported to Deno

options:
  -h, --help                show this help message and exit
  --port PORT               port to listen on (0 picks a free port)
  --host HOST               address to listen on (default: ${SERVER_HOST})
  --header-timeout SECONDS  time allowed for a request head (default: ${HEAD_TIMEOUT})
  --trace                   print each step of each connection on stderr`;

/** The book's epoll events, as the states one connection goes through. */
type EpollEvent = "EPOLLIN" | "EPOLLOUT" | "EPOLLHUP";

let printed = "";
/** Python's print(), batched: what 10 ms print goes out in one write. */
function print(text: string): void {
  if (printed === "") setTimeout(flushPrinted, 10);
  printed += text + "\n";
}
function flushPrinted(): void {
  let bytes = encoder.encode(printed);
  printed = "";
  while (bytes.length > 0) bytes = bytes.subarray(Deno.stdout.writeSync(bytes));
}

/** Just past EOL1 or EOL2 if the head has ended, else -1. */
function headEnd(request: Uint8Array, from: number): number {
  let i = request.indexOf(LF, from);
  for (; i >= 0; i = request.indexOf(LF, i + 1)) {
    if (request[i + 1] === LF) return i + 2;
    if (request[i + 1] === CR && request[i + 2] === LF) return i + 3;
  }
  return -1;
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g; // all but \t \n \r
const hex = (c: string) =>
  `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;

/**
 * Out of file descriptors (EMFILE, ENFILE) or memory (ENOMEM, ENOBUFS):
 * `accept()` would fail again at once, so the loop waits for one to free up.
 */
function isOutOfResources(error: unknown): boolean {
  return /os error (12|23|24|105)\b/.test((error as Error).message);
}

const PREVIEW_BYTES = 32;

/**
 * Client data as a trace line shows it: at most 32 bytes, in double quotes,
 * every byte that is not printable ASCII (and `"` and `\`) as \xNN, then
 * `...` if there was more.
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

/** The deadline, shutdown and EPOLLHUP may each close a connection first. */
function closeQuietly(connection: Deno.Conn): void {
  try {
    connection.close();
  } catch { /* already closed */ }
}

/** A socket server using epoll: the book's class. */
export class EpollServer {
  readonly sock: Deno.TcpListener;
  // The book's three dicts, keyed by connection number, and when each
  // connection's head must be complete (Date.now() milliseconds).
  readonly connections = new Map<number, Deno.TcpConn>();
  readonly requests = new Map<number, Uint8Array>();
  readonly responses = new Map<number, Uint8Array>();
  readonly deadlines = new Map<number, number>();
  #lastFileno = 0;
  #closing = false;
  #sweeper?: ReturnType<typeof setInterval>;

  /**
   * `trace`, when given (`--trace`), gets one line per step of the loop.
   * When it is not, each `this.trace?.(...)` below stops at the `?.`, before
   * its template string is built: tracing off costs one check per step.
   */
  constructor(
    host = SERVER_HOST,
    port = 0,
    readonly timeout = HEAD_TIMEOUT,
    readonly trace?: (line: string) => void,
  ) {
    this.sock = Deno.listen({ hostname: host, port });
    print("Started Epoll Server");
  }

  /** The book's listening-socket branch: accept and register, forever. */
  async run(): Promise<void> {
    const timeoutMs = this.timeout * 1000;
    // One timer for all deadlines; the oldest come first.
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const [fileno, deadline] of this.deadlines) {
        if (deadline > now) break;
        closeQuietly(this.connections.get(fileno)!); // its read or write fails
      }
    }, Math.min(timeoutMs / 4, 1000));
    while (!this.#closing) {
      let connection: Deno.TcpConn;
      try {
        connection = await this.sock.accept();
      } catch (error) {
        if (this.#closing) break; // close() closed the listening socket
        // A client that reset before it was accepted (NotConnected, os error
        // 107) failed on its own: log it and accept the next one at once.
        // Out of descriptors or memory, accept() would fail again at once:
        // only then does waiting help.
        print(`accept failed: ${(error as Error).message}`);
        if (isOutOfResources(error)) {
          await new Promise((resume) => setTimeout(resume, ACCEPT_PAUSE_MS));
        }
        continue;
      }
      const fileno = ++this.#lastFileno;
      if (this.#closing) {
        // Accepted just before close() closed the listener, but resumed here
        // only after it: close() could not see this one, so close it here.
        print(`connection ${fileno}: closed by server shutdown`);
        closeQuietly(connection);
        break;
      }
      connection.setNoDelay(true);
      this.connections.set(fileno, connection);
      this.requests.set(fileno, NOTHING);
      this.responses.set(fileno, SERVER_RESPONSE);
      this.deadlines.set(fileno, Date.now() + timeoutMs);
      this.trace?.(
        `listening socket: accepted connection ${fileno} from ` +
          `${connection.remoteAddr.hostname}:${connection.remoteAddr.port}, ` +
          "registered for EPOLLIN",
      );
      this.#poll(fileno); // not awaited: no client waits for another
    }
  }

  /**
   * Closes the listener and every connection, each with a line that says
   * why; `run()` then returns. A second call does nothing.
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    clearInterval(this.#sweeper);
    this.sock.close();
    for (const [fileno, connection] of this.connections) {
      print(`connection ${fileno}: closed by server shutdown`);
      closeQuietly(connection); // its pending read or write then fails
    }
  }

  /** One connection's way through the book's branches, from EPOLLIN on. */
  async #poll(fileno: number): Promise<void> {
    let event: EpollEvent = "EPOLLIN";
    try {
      while (event !== "EPOLLHUP") {
        event = event === "EPOLLIN"
          ? await this.#onReadable(fileno)
          : await this.#onWritable(fileno);
      }
    } catch (error) {
      const { name, message } = error as Error;
      const late = Date.now() >= this.deadlines.get(fileno)!;
      const why = late ? "no complete head in time" : `${name}: ${message}`;
      if (!this.#closing) print(`connection ${fileno}: closed (${why})`);
    } finally {
      this.#onHangup(fileno);
    }
  }

  /** EPOLLIN: append what arrived; once the head is complete, EPOLLOUT. */
  async #onReadable(fileno: number): Promise<EpollEvent> {
    const chunk = spareChunks.pop() ?? new Uint8Array(RECV_SIZE);
    try {
      const n = await this.connections.get(fileno)!.read(chunk);
      if (n === null) {
        this.trace?.(
          `connection ${fileno}: EPOLLIN, read 0 bytes (end of stream)`,
        );
        print(`connection ${fileno}: closed by the client mid-request`);
        return "EPOLLHUP";
      }
      // The usual head arrives in one read and is parsed where it landed.
      const old = this.requests.get(fileno)!;
      let request = chunk.subarray(0, n);
      if (old.length > 0) request = concat([old, request]);
      const end = headEnd(request, Math.max(old.length - 2, 0));
      const tooLarge = (end < 0 ? request.length : end) > MAX_REQUEST_BYTES;
      this.trace?.(
        `connection ${fileno}: EPOLLIN, read ${n} bytes ` +
          `${preview(chunk.subarray(0, n))}, head ` +
          (tooLarge
            ? `over ${MAX_REQUEST_BYTES} bytes`
            : end < 0
            ? `not complete (${request.length} bytes so far)`
            : "complete"),
      );
      if (tooLarge) {
        print(`connection ${fileno}: request head too large, sent 431`);
        this.responses.set(fileno, TOO_LARGE_RESPONSE);
        return "EPOLLOUT";
      }
      if (end < 0) {
        // Keep what came, copied out of the chunk that is about to be reused.
        this.requests.set(fileno, old.length > 0 ? request : request.slice());
        return "EPOLLIN";
      }
      const head = decoder.decode(request.subarray(0, end - 2));
      print(`${"-".repeat(40)}\n${head.replace(CONTROL, hex)}`);
      return "EPOLLOUT";
    } finally {
      if (spareChunks.length < MAX_SPARE_CHUNKS) spareChunks.push(chunk);
    }
  }

  /** EPOLLOUT: send what is left; once all is sent, on to EPOLLHUP. */
  async #onWritable(fileno: number): Promise<EpollEvent> {
    const connection = this.connections.get(fileno)!;
    const response = this.responses.get(fileno)!;
    const written = await connection.write(response);
    this.trace?.(
      `connection ${fileno}: EPOLLOUT, sent ${written} bytes, ` +
        (written < response.length
          ? `${response.length - written} left`
          : "all sent"),
    );
    if (written < response.length) {
      this.responses.set(fileno, response.subarray(written));
      return "EPOLLOUT";
    }
    if (response.buffer === TOO_LARGE_RESPONSE.buffer) {
      // Shut down writing, then drop what the client still sends until it
      // closes (or the deadline does): unread bytes make close() a reset.
      await connection.closeWrite();
      const sink = new Uint8Array(64 * 1024);
      let dropped = 0;
      while (true) {
        const n = await connection.read(sink);
        if (n === null) break;
        dropped += n;
      }
      this.trace?.(`connection ${fileno}: dropped ${dropped} more bytes`);
    }
    return "EPOLLHUP";
  }

  /** EPOLLHUP: close (Deno's close() shuts writing down first), forget. */
  #onHangup(fileno: number): void {
    this.trace?.(`connection ${fileno}: EPOLLHUP, closed`);
    closeQuietly(this.connections.get(fileno)!);
    this.connections.delete(fileno);
    this.requests.delete(fileno);
    this.responses.delete(fileno);
    this.deadlines.delete(fileno);
  }
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["port", "host", "header-timeout"],
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
  const timeout = args["header-timeout"] ?? `${HEAD_TIMEOUT}`;
  const seconds = Number(timeout);
  if (!(seconds > 0 && seconds < Infinity)) {
    argumentError(`argument --header-timeout: invalid value: '${timeout}'`);
  }
  // Off unless asked for; see the EpollServer constructor for why it is free.
  const trace: ((line: string) => void) | undefined = args.trace
    ? (line) => console.error(`trace: ${line}`)
    : undefined;
  let server: EpollServer;
  try {
    server = new EpollServer(args.host, port, seconds, trace);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      // `deno run` was not given --allow-net for this host: name the command
      // that has it (an IPv6 address goes in brackets there).
      const allow = args.host.includes(":") ? `[${args.host}]` : args.host;
      const timeoutArg = args["header-timeout"] === undefined
        ? ""
        : ` --header-timeout=${seconds}`;
      console.error(
        `Error: --host=${args.host} needs network permission for it: ` +
          `deno run --allow-net=${allow} ${FILE} --host=${args.host} ` +
          `--port=${port}${timeoutArg}`,
      );
      Deno.exit(1);
    }
    const { message } = error as Error;
    console.error(`Error: cannot listen on ${args.host}:${port}: ${message}`);
    Deno.exit(1);
  }
  // The book's `finally:` after Ctrl-C (KeyboardInterrupt). A signal
  // listener replaces Deno's default exit; it stays installed, so that the
  // second SIGINT of one Ctrl-C (a terminal signals the whole process group:
  // `deno task` and this script) finds it and does nothing.
  // Once the listener and every connection are closed, nothing keeps the
  // event loop alive (a signal listener does not), and the process exits 0.
  let shuttingDown = false;
  const shutdown = () => {
    if (shuttingDown) return;
    shuttingDown = true;
    print("Shutting down epoll server...");
    server.close();
  };
  // Installed before the ready line: a Ctrl-C right after it shuts down.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, shutdown);
  }
  const host = args.host.includes(":") ? `[${args.host}]` : args.host;
  print(`Listening on http://${host}:${server.sock.addr.port}/`);
  await server.run();
}
