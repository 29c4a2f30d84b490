/**
 * Recipe 2_4: "Writing a simple web server using epoll"
 * (Python Network Programming Cookbook, chapter 2), ported to Deno.
 *
 * Run it, then open http://localhost:8800/ in a browser, or in a second
 * terminal use curl, nc or telnet (type "GET / HTTP/1.0", then Enter twice):
 *
 *     deno task 2_4 --port=8800
 *     curl http://localhost:8800/
 *     printf 'GET / HTTP/1.0\r\n\r\n' | nc -N localhost 8800
 *
 * The server prints each request's head; `--trace` prints each step of the
 * loop on stderr; `--host=::1` serves IPv6 (`curl -6 'http://[::1]:8800/'`).
 *
 * From Python to Deno: the book's `epoll.poll()` loop moves each connection
 * through EPOLLIN (read until the head ends), EPOLLOUT (send the response)
 * and EPOLLHUP (close). Deno's event loop is itself epoll on Linux, so this
 * file keeps the book's dicts and branches without the system call: each
 * connection walks the branches in `#poll`, awaiting its socket where the
 * book calls `epoll.poll()`. `fileno` is a connection number.
 *
 * Fixed from the book:
 * - a client half-closing mid-request made the loop spin; it is closed;
 * - a reset ended the server; it closes that connection only;
 * - a head over 8 KiB gets a 431; one not complete in --header-timeout
 *   seconds (default 10) is closed;
 * - the response says `Connection: close`, since the server closes after it;
 * - the printed head has its control characters escaped.
 */

import { parseArgs } from "@std/cli/parse-args";
import { concat } from "@std/bytes/concat";

// book: import socket
// book: import select
// book: import argparse
// Deno's sockets and event loop stand in for `socket` and `select`;
// argparse's part is `parseArguments()` below, with std's parseArgs.

// book: SERVER_HOST = 'localhost'
const SERVER_HOST = "localhost";

// book: EOL1 = b'\n\n'
// book: EOL2 = b'\n\r\n'
const LF = 0x0a;
const CR = 0x0d;
const EOL1 = Uint8Array.of(LF, LF);
const EOL2 = Uint8Array.of(LF, CR, LF);
// book: SERVER_RESPONSE  = b"""HTTP/1.1 200 OK\r\nDate: Mon, 1 Apr 2013 01:01:01 GMT\r\nContent-Type: text/plain\r\nContent-Length: 25\r\n\r\n
// book: Hello from Epoll Server!"""
// Plus `Connection: close`: the server closes after it, and says so.
const SERVER_RESPONSE = new TextEncoder().encode(
  "HTTP/1.1 200 OK\r\nDate: Mon, 1 Apr 2013 01:01:01 GMT\r\n" +
    "Content-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n" +
    "\r\n\nHello from Epoll Server!",
);

/** The book's epoll events, as the states one connection goes through. */
type EpollEvent = "EPOLLIN" | "EPOLLOUT" | "EPOLLHUP";

// book: class EpollServer(object):
/** A socket server using epoll: the book's class. */
export class EpollServer {
  readonly sock: Deno.TcpListener;
  // The book's three dicts, local to its run(); here fields, since each
  // connection's branches are methods. Keyed by connection number.
  readonly connections = new Map<number, Deno.TcpConn>();
  readonly requests = new Map<number, Uint8Array>();
  readonly responses = new Map<number, Uint8Array>();
  // Not in the book: the head deadlines and the 431s (sections below).
  readonly deadlines: Deadlines;
  readonly rejected = new Set<number>();
  #lastFileno = 0;
  #shuttingDown = false;

  /**
   * `trace`, when given (`--trace`), gets one line per step of the loop.
   * When it is not, each `this.trace?.(...)` below stops at the `?.`, and
   * each `if (this.trace)` block is skipped, before any string is built.
   */
  // book: def __init__(self, host=SERVER_HOST, port=0):
  constructor(
    host = SERVER_HOST,
    port = 0,
    readonly timeout = HEAD_TIMEOUT,
    readonly trace?: (line: string) => void,
  ) {
    // book: self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    // book: self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    // book: self.sock.bind((host, port))
    // book: self.sock.listen(1)
    // book: self.sock.setblocking(0)
    // Deno.listen does all five, SO_REUSEADDR included; every Deno socket
    // is non-blocking, and Deno's event loop is what watches it.
    this.sock = Deno.listen({ hostname: host, port });
    // Not in the book: each head's deadline (--header-timeout), swept in run().
    this.deadlines = new Deadlines(timeout * 1000);
    // book: self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    // Deno sets socket options on a connection only: run() sets it on each.
    // book: print ("Started Epoll Server")
    print("Started Epoll Server");
    // book: self.epoll = select.epoll()
    // book: self.epoll.register(self.sock.fileno(), select.EPOLLIN)
    // Deno's event loop is the epoll; `run()` awaiting accept() registers.
  }

  // book: def run(self):
  async run(): Promise<void> {
    // book: try:
    // The book's `finally:` is shutdown() below, called on SIGINT/SIGTERM.
    // book: connections = {}; requests = {}; responses = {}
    // (the fields above)
    this.deadlines.start((fileno) =>
      closeQuietly(this.connections.get(fileno)!)
    );
    // book: while True:
    while (!this.#shuttingDown) {
      // book: events = self.epoll.poll(1)
      // book: for fileno, event in events:
      // Each `await` is this poll: here for the listening socket, in
      // #poll() for each connection's. Deno's event loop resumes whichever
      // is ready, one at a time.
      // book: if fileno == self.sock.fileno():
      // book: connection, address = self.sock.accept()
      const connection = await this.#accept();
      if (connection === null) continue; // failed; logged in #accept()
      this.#lastFileno += 1;
      const fileno = this.#lastFileno;
      if (this.#shuttingDown) {
        // Accepted just before shutdown() closed the listener: close it.
        print(`connection ${fileno}: closed by server shutdown`);
        closeQuietly(connection);
        break;
      }
      // book: connection.setblocking(0)
      // (Deno's sockets are non-blocking.) The book's TCP_NODELAY: the
      // response goes out at once, not held back to join a later segment.
      connection.setNoDelay(true);
      // book: self.epoll.register(connection.fileno(), select.EPOLLIN)
      // (registering is starting #poll() below, once the dicts hold it)
      // book: connections[connection.fileno()] = connection
      this.connections.set(fileno, connection);
      // book: requests[connection.fileno()] = b''
      this.requests.set(fileno, NOTHING);
      // book: responses[connection.fileno()] = SERVER_RESPONSE
      this.responses.set(fileno, SERVER_RESPONSE);
      this.deadlines.set(fileno);
      if (this.trace) {
        const from = hostPort(connection.remoteAddr);
        this.trace(
          `listening socket: accepted connection ${fileno} from ${from}, ` +
            "registered for EPOLLIN",
        );
      }
      this.#poll(fileno); // not awaited: no client waits for another
    }
  }

  /**
   * One connection's way through the book's `for fileno, event in events:`
   * loop: the branch for the event it waits for, until EPOLLHUP. A branch
   * awaits the socket (the book's `epoll.poll()`), then runs as the book's
   * does and names the next event. An error (a reset, or a close by the
   * deadline or by shutdown) ends the walk, with a line saying why.
   */
  async #poll(fileno: number): Promise<void> {
    let event: EpollEvent = "EPOLLIN";
    try {
      while (event !== "EPOLLHUP") {
        if (event === "EPOLLIN") event = await this.#onReadable(fileno);
        else event = await this.#onWritable(fileno);
      }
      if (this.rejected.has(fileno)) await this.#drainRejected(fileno);
    } catch (error) {
      // Fixed from the book, where a reset ended the whole server.
      const why = this.#whyClosed(fileno, error as Error);
      if (!this.#shuttingDown) print(`connection ${fileno}: closed (${why})`);
    } finally {
      this.#onHangup(fileno);
    }
  }

  // book: elif event & select.EPOLLIN:
  async #onReadable(fileno: number): Promise<EpollEvent> {
    // book: requests[fileno] += connections[fileno].recv(1024)
    // `read` waits until the socket has bytes, copies up to chunk.length of
    // them into `chunk` and returns how many; null is the client's end of
    // stream (the book's recv() returning b"").
    const chunk = takeChunk();
    const n = await this.connections.get(fileno)!.read(chunk);
    try {
      if (n === null) return this.#onEndOfStream(fileno);
      const old = this.requests.get(fileno)!;
      const request = old.length > 0
        ? concat([old, chunk.subarray(0, n)])
        : chunk.subarray(0, n);
      // book: if EOL1 in requests[fileno] or EOL2 in requests[fileno]:
      // headEnd() says where, searching only from the new bytes on.
      const end = headEnd(request, Math.max(old.length - 2, 0));
      const tooLarge = isTooLarge(request, end);
      this.#traceRead(
        fileno,
        chunk.subarray(0, n),
        request.length,
        end,
        tooLarge,
      );
      if (tooLarge) return this.#reject(fileno);
      if (end < 0) {
        // Keep what came; a first piece still lies in the chunk that is
        // about to be reused, so it is copied out.
        this.requests.set(fileno, old.length > 0 ? request : request.slice());
        return "EPOLLIN";
      }
      // book: self.epoll.modify(fileno, select.EPOLLOUT)
      // (the "EPOLLOUT" returned below, once the head is printed)
      // book: print('-'*40 + '\n' + requests[fileno].decode()[:-2])
      printHead(request.subarray(0, end - 2));
      return "EPOLLOUT";
    } finally {
      giveBackChunk(chunk);
    }
  }

  // book: elif event & select.EPOLLOUT:
  async #onWritable(fileno: number): Promise<EpollEvent> {
    const response = this.responses.get(fileno)!;
    // book: byteswritten = connections[fileno].send(responses[fileno])
    // Like send(), `write` may take only part of the bytes (the socket's
    // buffer is full); it returns how many it took.
    const written = await this.connections.get(fileno)!.write(response);
    // book: responses[fileno] = responses[fileno][byteswritten:]
    this.responses.set(fileno, response.subarray(written));
    if (this.trace) {
      const rest = response.length - written;
      const left = rest === 0 ? "all sent" : `${plural(rest, "byte")} left`;
      this.trace(
        `connection ${fileno}: EPOLLOUT, sent ${
          plural(written, "byte")
        }, ${left}`,
      );
    }
    // book: if len(responses[fileno]) == 0:
    if (written === response.length) {
      // book: self.epoll.modify(fileno, 0)
      // book: connections[fileno].shutdown(socket.SHUT_RDWR)
      // Both happen in EPOLLHUP: close() sends our end of stream.
      return "EPOLLHUP";
    }
    return "EPOLLOUT";
  }

  /**
   * The book's EPOLLHUP branch. The book never deletes requests[fileno] and
   * responses[fileno]; here every map forgets the connection.
   */
  // book: elif event & select.EPOLLHUP:
  #onHangup(fileno: number): void {
    this.trace?.(`connection ${fileno}: EPOLLHUP, closed`);
    // book: self.epoll.unregister(fileno)
    // (#poll() returns: nothing awaits this socket any more)
    // book: connections[fileno].close()
    closeQuietly(this.connections.get(fileno)!);
    // book: del connections[fileno]
    this.connections.delete(fileno);
    this.requests.delete(fileno);
    this.responses.delete(fileno);
    this.deadlines.delete(fileno);
    this.rejected.delete(fileno);
  }

  /**
   * The one shutdown: says so, then closes the listener and every
   * connection, each with a line; `run()` then returns. A terminal's Ctrl-C
   * under `deno task` delivers SIGINT twice: the second call does nothing.
   */
  shutdown(): void {
    // book: finally:
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    print("Shutting down epoll server...");
    this.deadlines.stop();
    // book: self.epoll.unregister(self.sock.fileno())
    // book: self.epoll.close()
    // (Deno's event loop stays; nothing awaits the listener once closed)
    // book: self.sock.close()
    this.sock.close();
    for (const [fileno, connection] of this.connections) {
      print(`connection ${fileno}: closed by server shutdown`);
      closeQuietly(connection); // its pending read or write then fails
    }
  }

  // --- Not in the book: the port's own steps of the loop ---

  /**
   * The book's accept(); null when it failed. A client that reset before
   * it was accepted (os error 107) failed on its own: log it, go on at
   * once. Out of descriptors or memory, accept() would fail again at once:
   * only then does a pause help. Null also once shutdown() closed it.
   */
  async #accept(): Promise<Deno.TcpConn | null> {
    try {
      return await this.sock.accept();
    } catch (error) {
      if (this.#shuttingDown) return null;
      print(`accept failed: ${(error as Error).message}`);
      if (isOutOfResources(error as Error)) {
        await new Promise((resume) => setTimeout(resume, ACCEPT_PAUSE_MS));
      }
      return null;
    }
  }

  /**
   * recv() returned b"": the client's end of stream. Fixed from the book,
   * where the connection stayed registered for EPOLLIN, ready again at
   * once, for ever. Here it is hung up, with a line that says whether the
   * client had begun a request.
   */
  #onEndOfStream(fileno: number): EpollEvent {
    this.trace?.(`connection ${fileno}: EPOLLIN, read 0 bytes (end of stream)`);
    if (this.requests.get(fileno)!.length === 0) {
      print(`connection ${fileno}: closed by the client, no request sent`);
    } else {
      print(`connection ${fileno}: closed by the client mid-request`);
    }
    return "EPOLLHUP";
  }

  /** The EPOLLIN trace line: what was read, and whether the head is complete. */
  #traceRead(
    fileno: number,
    data: Uint8Array,
    sofar: number,
    end: number,
    tooLarge: boolean,
  ) {
    if (!this.trace) return;
    let head = "complete";
    if (tooLarge) {
      head = `over ${MAX_REQUEST_BYTES} bytes`;
    } else if (end < 0) {
      head = `not complete (${plural(sofar, "byte")} so far)`;
    }
    this.trace(
      `connection ${fileno}: EPOLLIN, read ${plural(data.length, "byte")} ` +
        `${preview(data)}, head ${head}`,
    );
  }

  /** A head over MAX_REQUEST_BYTES: a 431 instead of the page. */
  #reject(fileno: number): EpollEvent {
    print(`connection ${fileno}: request head too large, sent 431`);
    this.responses.set(fileno, TOO_LARGE_RESPONSE);
    this.rejected.add(fileno);
    return "EPOLLOUT";
  }

  /**
   * After a 431, read what the client still sends until its end of stream
   * (or the deadline's close), then hang up. Closing a socket with unread
   * bytes makes the kernel send a reset, which can destroy the 431 before
   * the client reads it; `closeWrite()` first sends our end of stream.
   */
  async #drainRejected(fileno: number): Promise<void> {
    const connection = this.connections.get(fileno)!;
    await connection.closeWrite();
    const sink = new Uint8Array(64 * 1024);
    let dropped = 0;
    while (true) {
      const n = await connection.read(sink);
      if (n === null) break;
      dropped += n;
    }
    this.trace?.(
      `connection ${fileno}: dropped ${plural(dropped, "more byte")}`,
    );
  }

  /** Why a connection's read or write failed, in the book's terms. */
  #whyClosed(fileno: number, error: Error): string {
    // The deadline sweep closes a late connection, which makes its pending
    // read or write fail.
    if (this.deadlines.passed(fileno)) {
      if (this.rejected.has(fileno)) {
        return "431 sent, the client still sending at the deadline";
      }
      return "no complete head in time";
    }
    return `${error.name}: ${error.message}`;
  }
}

// --- Not in the book: where a head ends, and faults ---

const NOTHING = new Uint8Array(0);

/**
 * Where the request head ends: just past the first EOL1 ("\n\n") or EOL2
 * ("\n\r\n") in `request`, or -1 if neither is there yet. The book asks
 * `EOL1 in requests[fileno] or EOL2 in requests[fileno]`; this also says
 * where, so the head is printed without what followed it. The search starts
 * at `from`: a head that came in pieces is not searched again from its start
 * (a caller passes two bytes before the new piece, where an EOL may begin).
 */
export function headEnd(request: Uint8Array, from = 0): number {
  let i = request.indexOf(LF, from);
  while (i >= 0) {
    if (startsAt(request, i, EOL1)) return i + EOL1.length;
    if (startsAt(request, i, EOL2)) return i + EOL2.length;
    i = request.indexOf(LF, i + 1);
  }
  return -1;
}

/** Does `bytes` hold `part` at `index`? */
function startsAt(bytes: Uint8Array, index: number, part: Uint8Array): boolean {
  for (let j = 0; j < part.length; j++) {
    if (bytes[index + j] !== part[j]) return false;
  }
  return true;
}

/**
 * Did accept() fail for want of file descriptors or memory (EMFILE, ENFILE,
 * ENOMEM, ENOBUFS)? Only then does waiting help: a descriptor may free up.
 */
function isOutOfResources(error: Error): boolean {
  return /os error (12|23|24|105)\b/.test(error.message);
}
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources

/**
 * Closes, ignoring "already closed": the deadline, shutdown and EPOLLHUP may
 * each be first to close a connection.
 */
function closeQuietly(connection: Deno.Conn): void {
  try {
    connection.close();
  } catch {
    // already closed
  }
}

// --- Not in the book: deadlines for the head (slowloris) ---

const HEAD_TIMEOUT = 10; // seconds, --header-timeout's default

/**
 * When each connection's head must be complete. One timer sweeps them all
 * (a timer per connection cost about 8% of the throughput); closing a late
 * connection makes its pending read fail, and #poll() then logs and
 * forgets it. A Map keeps insertion order, so the oldest deadlines come
 * first and the sweep stops at the first one ahead.
 */
class Deadlines {
  #at = new Map<number, number>();
  #sweeper?: ReturnType<typeof setInterval>;

  /** `timeoutMs`: how long after its connection a head may take to arrive. */
  constructor(readonly timeoutMs: number) {}

  /**
   * Starts the sweep, which calls `close` for each connection past its
   * deadline; a close comes at most a quarter of the timeout late.
   */
  start(close: (fileno: number) => void): void {
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const [fileno, deadline] of this.#at) {
        if (deadline > now) break;
        close(fileno);
      }
    }, Math.min(this.timeoutMs / 4, 1000));
  }

  stop(): void {
    clearInterval(this.#sweeper);
  }

  set(fileno: number): void {
    this.#at.set(fileno, Date.now() + this.timeoutMs);
  }

  delete(fileno: number): void {
    this.#at.delete(fileno);
  }

  passed(fileno: number): boolean {
    return Date.now() >= (this.#at.get(fileno) ?? Infinity);
  }
}

// --- Not in the book: the 431 for a head over 8 KiB ---

const MAX_REQUEST_BYTES = 8 * 1024;
const TOO_LARGE_RESPONSE = new TextEncoder().encode(
  "HTTP/1.1 431 Request Header Fields Too Large\r\n" +
    "Content-Length: 0\r\nConnection: close\r\n\r\n",
);

/** Is the head (ended at `end`, or not yet: -1) over MAX_REQUEST_BYTES? */
function isTooLarge(request: Uint8Array, end: number): boolean {
  return (end < 0 ? request.length : end) > MAX_REQUEST_BYTES;
}

// --- Not in the book: tracing (--trace) ---

const PREVIEW_BYTES = 32; // client data a trace line shows, at most
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
/** One character a terminal shows as it is: no control or format character. */
const PRINTABLE = /^[^\p{C}\p{Zl}\p{Zp}]$/u;

/**
 * A trace line on stderr. Whatever print() still holds in its batch goes
 * out first, so that printed lines and trace lines reach a terminal in the
 * order the loop made them: a request's head before its EPOLLOUT line.
 */
function printTrace(line: string): void {
  flushPrinted();
  console.error(`trace: ${line}`);
}

/**
 * Client data as a trace line shows it: at most 32 bytes, in double
 * quotes, then `...` if there was more. Printable ASCII and printable UTF-8
 * characters (Korean, say) are shown as text; every other byte (control
 * bytes, invalid UTF-8) and `"` and `\` as \xNN.
 */
export function preview(bytes: Uint8Array): string {
  let text = "";
  let i = 0;
  while (i < bytes.length && i < PREVIEW_BYTES) {
    const byte = bytes[i];
    const plain = byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c;
    if (plain) {
      text += String.fromCharCode(byte);
      i += 1;
      continue;
    }
    const size = utf8Size(byte);
    const character = size > 1 ? decodeOne(bytes, i, size) : undefined;
    if (character !== undefined && PRINTABLE.test(character)) {
      if (i + size > PREVIEW_BYTES) break; // shown whole or not at all
      text += character;
      i += size;
      continue;
    }
    text += `\\x${byte.toString(16).padStart(2, "0")}`;
    i += 1;
  }
  return `"${text}${i < bytes.length ? "..." : ""}"`;
}

/** How many bytes a UTF-8 sequence starting with `lead` has (0: not a lead byte). */
function utf8Size(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/** The one character `size` bytes at `at` encode, or undefined if they are not valid UTF-8. */
function decodeOne(bytes: Uint8Array, at: number, size: number) {
  if (at + size > bytes.length) return undefined;
  try {
    return strictUtf8.decode(bytes.subarray(at, at + size));
  } catch {
    return undefined;
  }
}

/** A count and its noun in good English: `1 byte`, `2 bytes`. */
function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** An address as a URL writes it: an IPv6 one in brackets. */
function bracketed(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** "127.0.0.1:54590", "[::1]:54590". */
function hostPort(address: Deno.NetAddr): string {
  return `${bracketed(address.hostname)}:${address.port}`;
}

// --- Not in the book: argument parsing and the permission message ---

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

/** What the command line asked for. */
interface Arguments {
  host: string;
  /** Was --host given, or is `host` the default? */
  hostGiven: boolean;
  port: number;
  timeout: number;
  timeoutGiven: boolean;
  trace: boolean;
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

/** The book's argparse, with the port's options; exits as argparse does. */
function parseArguments(argv: string[]): Arguments {
  const args = parseArgs(argv, {
    string: ["port", "host", "header-timeout"],
    boolean: ["help", "trace"],
    alias: { h: "help" },
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
  return {
    host: args.host ?? SERVER_HOST,
    hostGiven: args.host !== undefined,
    port,
    timeout: seconds,
    timeoutGiven: args["header-timeout"] !== undefined,
    trace: args.trace,
  };
}

/**
 * The book's `EpollServer(host=SERVER_HOST, port=port)`; where it cannot
 * listen, one line on stderr and exit 1. Without network permission for
 * the host (`deno run` without --allow-net), the line is the whole command
 * that has it.
 */
function listenOrExit(args: Arguments): EpollServer {
  const trace = args.trace ? printTrace : undefined; // off unless asked for
  try {
    return new EpollServer(args.host, args.port, args.timeout, trace);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) {
      const where = `${bracketed(args.host)}:${args.port}`;
      console.error(`Error: cannot listen on ${where}: ${error}`);
      Deno.exit(1);
    }
    const options = [`--port=${args.port}`];
    if (args.hostGiven) options.unshift(`--host=${args.host}`);
    if (args.timeoutGiven) options.push(`--header-timeout=${args.timeout}`);
    if (args.trace) options.push("--trace");
    const command = `deno run --allow-net=${bracketed(args.host)} ${FILE} ` +
      options.join(" ");
    if (args.hostGiven) {
      console.error(
        `Error: --host=${args.host} needs network permission for it: ${command}`,
      );
    } else {
      console.error(
        `Error: listening on ${args.host} needs network permission: ` +
          `${command} (or: deno task 2_4 ${options.join(" ")})`,
      );
    }
    Deno.exit(1);
  }
}

// --- Not in the book: the shutdown on SIGINT and SIGTERM ---

const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards

/**
 * The book's `finally:` after Ctrl-C (KeyboardInterrupt). A signal listener
 * replaces Deno's default exit; it stays installed, so that the second
 * SIGINT of one Ctrl-C (a terminal signals the whole process group: `deno
 * task` and this script) finds it and does nothing.
 */
function shutdownOnSignals(server: EpollServer): void {
  const shutdown = () => server.shutdown();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, shutdown);
  }
}

/**
 * Exits 0 once run() has returned. `deno task` forwards a terminal's
 * Ctrl-C to the script a moment after the script got its own: a SIGINT
 * that comes while the process ends finds no listener and kills it with
 * 130. So wait SIGNAL_GRACE_MS for it, then exit at once.
 */
async function exitAfterShutdown(): Promise<never> {
  await new Promise((resume) => setTimeout(resume, SIGNAL_GRACE_MS));
  flushPrinted(); // Deno.exit() would drop what the batch still holds
  Deno.exit(0);
}

// --- Not in the book: speed (printing in batches, reusing read buffers) ---

const DASHES = "-".repeat(40);
const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8 with U+FFFD
const DASHES_LINE = encoder.encode(`${DASHES}\n`);

/**
 * What was printed in the last 10 ms and is not yet written: bytes, not a
 * string, so that a head can be copied in as it came off the socket.
 */
const printed = new Uint8Array(64 * 1024);
let printedLength = 0;
let flushTimer: ReturnType<typeof setTimeout> | undefined;

/**
 * Python's print(), batched: the first line starts a 10 ms timer, and the
 * timer writes all lines printed by then in one write to stdout: a write
 * per line cost 8% and 22% of the throughput in two wrk runs (the book
 * prints every head). A trace line writes the batch at once (printTrace), so the order
 * of what a terminal shows never changes.
 * The pending timer also keeps the process alive until the lines are out.
 */
function print(text: string): void {
  // encodeInto writes at most 3 bytes per UTF-16 unit of the text.
  const most = text.length * 3 + 1;
  if (most > printed.length) {
    // Too long to batch (only a huge escaped head is): write it now.
    flushPrinted();
    writeAll(encoder.encode(text + "\n"));
    return;
  }
  makeRoom(most);
  const into = printed.subarray(printedLength);
  printedLength += encoder.encodeInto(text, into).written;
  printed[printedLength] = LF;
  printedLength += 1;
}

/**
 * The book's `print('-'*40 + '\n' + head)`. A head of printable ASCII (the
 * usual one) is copied into the batch as it came; any other head is decoded
 * to a string, its control characters escaped, and encoded back.
 */
function printHead(head: Uint8Array): void {
  if (
    !isPlainText(head) || head.length + DASHES_LINE.length + 1 > printed.length
  ) {
    print(`${DASHES}\n${decoder.decode(head).replace(CONTROL, hex)}`);
    return;
  }
  makeRoom(DASHES_LINE.length + head.length + 1);
  printed.set(DASHES_LINE, printedLength);
  printedLength += DASHES_LINE.length;
  printed.set(head, printedLength);
  printedLength += head.length;
  printed[printedLength] = LF;
  printedLength += 1;
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g; // all but \t \n \r
/** A control character as the text \xNN, for printing heads safely. */
function hex(character: string): string {
  return `\\x${character.charCodeAt(0).toString(16).padStart(2, "0")}`;
}

/** Only printable ASCII, tabs and line ends: bytes a terminal shows as is. */
function isPlainText(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i];
    const printable = byte >= 0x20 && byte <= 0x7e;
    const spacing = byte === 0x09 || byte === LF || byte === CR;
    if (!printable && !spacing) return false;
  }
  return true;
}

/** Writes the batch now if `size` more bytes would not fit; starts the timer. */
function makeRoom(size: number): void {
  if (printedLength + size > printed.length) flushPrinted();
  // One timer per batch: only the first line of a batch starts it.
  if (flushTimer === undefined) flushTimer = setTimeout(flushPrinted, 10);
}

function flushPrinted(): void {
  clearTimeout(flushTimer);
  flushTimer = undefined;
  writeAll(printed.subarray(0, printedLength));
  printedLength = 0;
}

function writeAll(bytes: Uint8Array): void {
  // `writeSync` returns how many bytes it wrote, which may be fewer than all
  // (a pipe that is full): write the rest until none is left.
  while (bytes.length > 0) {
    const written = Deno.stdout.writeSync(bytes);
    bytes = bytes.subarray(written);
  }
}

const RECV_SIZE = 1024; // the book's recv(1024)
/**
 * Read buffers to reuse. A pending `conn.read(chunk)` holds its `chunk`
 * until bytes arrive (Deno's runtime writes into it then), so a chunk goes
 * back only once its read has returned; at most MAX_SPARE_CHUNKS wait.
 */
const spareChunks: Uint8Array[] = [];
const MAX_SPARE_CHUNKS = 1024;

function takeChunk(): Uint8Array {
  return spareChunks.pop() ?? new Uint8Array(RECV_SIZE);
}

function giveBackChunk(chunk: Uint8Array): void {
  if (spareChunks.length < MAX_SPARE_CHUNKS) spareChunks.push(chunk);
}

// book: if __name__ == '__main__':
if (import.meta.main) {
  // book: parser = argparse.ArgumentParser(description='Socket Server Example with Epoll')
  // book: parser.add_argument('--port', action="store", dest="port", type=int, required=True)
  // book: given_args = parser.parse_args()
  // book: port = given_args.port
  const args = parseArguments(Deno.args);
  // book: server = EpollServer(host=SERVER_HOST, port=port)
  const server = listenOrExit(args);
  shutdownOnSignals(server); // before the ready line: a Ctrl-C right after it
  const url = `http://${bracketed(args.host)}:${server.sock.addr.port}/`;
  print(`Listening on ${url}`);
  // book: server.run()
  await server.run();
  await exitAfterShutdown();
}
