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
 * connection through `#onReadable`, `#onWritable` and `#onHangup`, awaiting
 * its socket where the book calls `epoll.poll()` and then running the branch
 * synchronously, as the book does; the event loop runs all the walks at
 * once. `fileno` is a connection number.
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
 * Not in the book: the `deadlines` map (for the slowloris close), the 431
 * and its drain, `--host`, `--header-timeout`, `--trace` (each step of the
 * loop on stderr) and the shutdown on SIGINT and SIGTERM.
 *
 * Speed: printed lines go out in one write every 10 ms, one timer checks all
 * deadlines, read buffers are reused. A write, a timer and a buffer per
 * request cost about 30%, 8% and 5% of the throughput (measured with wrk).
 * The batch is bytes: a head of plain ASCII is copied in as it came off the
 * socket, not decoded to a string and encoded back (about 4% of the CPU
 * time per request).
 */

import { parseArgs } from "@std/cli/parse-args";
import { concat } from "@std/bytes/concat";

const SERVER_HOST = "localhost"; // book: SERVER_HOST
const HEAD_TIMEOUT = 10; // seconds
const MAX_REQUEST_BYTES = 8 * 1024;
const RECV_SIZE = 1024; // the book's recv(1024)
// Read buffers to reuse. A pending `conn.read(chunk)` holds its `chunk` until
// bytes arrive (Deno's runtime writes into it then), so a chunk goes back here
// only once its read has returned; at most this many wait here:
const spareChunks: Uint8Array[] = [];
const MAX_SPARE_CHUNKS = 1024;
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const PREVIEW_BYTES = 32; // client data a trace line shows, at most
const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards
const NOTHING = new Uint8Array(0);
// book: EOL1 = b'\n\n', EOL2 = b'\n\r\n' (a head ends at either)
const LF = 0x0a;
const CR = 0x0d;
const DASHES = "-".repeat(40); // book: '-'*40
const encoder = new TextEncoder();
const decoder = new TextDecoder(); // replaces invalid UTF-8 with U+FFFD
const DASHES_LINE = encoder.encode(`${DASHES}\n`);
// book: SERVER_RESPONSE, plus `Connection: close` (see the header)
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

/**
 * What was printed in the last 10 ms and is not yet written: bytes, not a
 * string, so that a head can be copied in as it came off the socket.
 */
const printed = new Uint8Array(64 * 1024);
let printedLength = 0;
let flushTimer: ReturnType<typeof setTimeout> | undefined;

/**
 * Python's print(), batched: the first line starts a 10 ms timer, and the
 * timer writes all lines printed by then in one write to stdout. (A write
 * per line cost about 30% of the throughput: the book prints every head.)
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
 * book: print('-'*40 + '\n' + requests[fileno].decode()[:-2]). A head of
 * printable ASCII (the usual one) is copied into the batch as it came; only
 * another head is decoded to a string, escaped and encoded back, which cost
 * about 4% of the CPU time per request when every head took that way.
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
    if (request[i + 1] === LF) return i + 2; // EOL1
    if (request[i + 1] === CR && request[i + 2] === LF) return i + 3; // EOL2
    i = request.indexOf(LF, i + 1);
  }
  return -1;
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g; // all but \t \n \r
/** A control character as the text \xNN, for printing heads safely. */
function hex(character: string): string {
  return `\\x${character.charCodeAt(0).toString(16).padStart(2, "0")}`;
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

/** A socket server using epoll: the book's class. */
export class EpollServer {
  readonly sock: Deno.TcpListener;
  // book: connections = {}; requests = {}; responses = {}. The book keys
  // them by file descriptor; Deno does not show one, so the keys here are
  // connection numbers (1, 2, 3, ...), named `fileno` as in the book.
  readonly connections = new Map<number, Deno.TcpConn>();
  readonly requests = new Map<number, Uint8Array>();
  readonly responses = new Map<number, Uint8Array>();
  // Not in the book: when each connection's head must be complete
  // (Date.now() milliseconds). A Map keeps insertion order, so the oldest
  // deadlines come first and the sweeper below stops at the first one ahead.
  readonly deadlines = new Map<number, number>();
  // Not in the book: connections answered 431, which read what their client
  // still sends until it ends, before they close (see #drainRejected).
  readonly rejected = new Set<number>();
  #lastFileno = 0;
  #shuttingDown = false;
  #sweeper?: ReturnType<typeof setInterval>;

  /**
   * `trace`, when given (`--trace`), gets one line per step of the loop.
   * When it is not, each `this.trace?.(...)` below stops at the `?.`, and
   * the one `if (this.trace)` block is skipped, before any string is built:
   * tracing off costs one check per step.
   */
  constructor(
    host = SERVER_HOST,
    port = 0,
    readonly timeout = HEAD_TIMEOUT,
    readonly trace?: (line: string) => void,
  ) {
    // book: socket(), setsockopt(SO_REUSEADDR), bind(), listen(), and
    // epoll.register(self.sock.fileno(), EPOLLIN). Deno.listen does all of
    // it, SO_REUSEADDR included; its socket is non-blocking, as every socket
    // in Deno is, and Deno's event loop is what watches it.
    this.sock = Deno.listen({ hostname: host, port });
    print("Started Epoll Server");
  }

  /**
   * book: run(), its `while True: events = self.epoll.poll(1)` and the
   * listening-socket branch. Here the loop only accepts: each connection's
   * own branches run in `#poll`, started for it and not awaited, and Deno's
   * event loop (epoll underneath on Linux) resumes whichever is ready.
   */
  async run(): Promise<void> {
    const timeoutMs = this.timeout * 1000;
    // Not in the book: one timer for all deadlines (a timer per connection
    // cost about 8% of the throughput). Closing a late connection makes its
    // pending read fail, and #poll then logs and forgets it.
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const [fileno, deadline] of this.deadlines) {
        if (deadline > now) break;
        closeQuietly(this.connections.get(fileno)!); // its read or write fails
      }
    }, Math.min(timeoutMs / 4, 1000)); // so a close comes at most 1/4 late
    while (!this.#shuttingDown) {
      let connection: Deno.TcpConn;
      try {
        // book: if fileno == self.sock.fileno(): connection, address = accept()
        connection = await this.sock.accept();
      } catch (error) {
        if (this.#shuttingDown) break; // shutdown() closed the listening socket
        // A client that reset before it was accepted (NotConnected, os error
        // 107) failed on its own: log it and accept the next one at once.
        // Out of descriptors or memory, accept() would fail again at once:
        // only then does waiting help.
        print(`accept failed: ${(error as Error).message}`);
        if (isOutOfResources(error as Error)) {
          await new Promise((resume) => setTimeout(resume, ACCEPT_PAUSE_MS));
        }
        continue;
      }
      this.#lastFileno += 1;
      const fileno = this.#lastFileno;
      if (this.#shuttingDown) {
        // Not in the book: a connection accepted during the shutdown.
        // Accepted just before shutdown() closed the listener, but resumed
        // here only after it: shutdown() could not see this one, so close it.
        print(`connection ${fileno}: closed by server shutdown`);
        closeQuietly(connection);
        break;
      }
      // book: TCP_NODELAY, set on the listening socket. Deno sets socket
      // options on a connection only, so each accepted one gets it: the
      // response goes out at once, not held back to join a later segment.
      connection.setNoDelay(true);
      // book: epoll.register(connection.fileno(), EPOLLIN) and the three dicts
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
   * The one shutdown: says so, then closes the listener and every
   * connection, each with a line that says why; `run()` then returns.
   * Idempotent: a terminal's Ctrl-C under `deno task` delivers SIGINT twice
   * (to the task runner, which passes it on, and to this process), and the
   * second call does nothing and prints nothing.
   */
  shutdown(): void {
    // book: finally: epoll.unregister(...); epoll.close(); self.sock.close()
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    print("Shutting down epoll server...");
    clearInterval(this.#sweeper);
    this.sock.close();
    for (const [fileno, connection] of this.connections) {
      print(`connection ${fileno}: closed by server shutdown`);
      closeQuietly(connection); // its pending read or write then fails
    }
  }

  /**
   * One connection's way through the book's `for fileno, event in events:`
   * loop, from EPOLLIN on. Each `await` below is where the book returns to
   * `epoll.poll()` until this connection's socket is ready: `read` resolves
   * once bytes have arrived (EPOLLIN), `write` once the socket took some
   * (EPOLLOUT). Then the branch for that event runs, synchronously, as the
   * book's do, and names the next event to wait for. An error (a reset, or
   * the close by the deadline or by shutdown) ends the walk.
   */
  async #poll(fileno: number): Promise<void> {
    const connection = this.connections.get(fileno)!;
    let event: EpollEvent = "EPOLLIN";
    try {
      while (event !== "EPOLLHUP") {
        if (event === "EPOLLIN") {
          // `read` waits until the socket has bytes, copies up to
          // chunk.length of them into `chunk` and returns how many; null is
          // the client's end of stream (the book's recv() returning b"").
          const chunk = spareChunks.pop() ?? new Uint8Array(RECV_SIZE);
          const n = await connection.read(chunk);
          event = this.#onReadable(fileno, chunk, n);
          if (spareChunks.length < MAX_SPARE_CHUNKS) spareChunks.push(chunk);
        } else {
          // Like send(), `write` may take only part of the bytes (the
          // socket's buffer is full); it returns how many it took.
          const written = await connection.write(this.responses.get(fileno)!);
          event = this.#onWritable(fileno, written);
        }
      }
      if (this.rejected.has(fileno)) await this.#drainRejected(fileno);
    } catch (error) {
      // Fixed from the book, where a reset ended the whole server: only
      // this connection ends, with a line saying why.
      const { name, message } = error as Error;
      // The sweeper closes a connection at its deadline, which makes its
      // pending read or write fail: say why in the book's terms.
      const late = Date.now() >= this.deadlines.get(fileno)!;
      let why = `${name}: ${message}`;
      if (late && this.rejected.has(fileno)) {
        why = "431 sent, the client still sending at the deadline";
      } else if (late) {
        why = "no complete head in time";
      }
      if (!this.#shuttingDown) print(`connection ${fileno}: closed (${why})`);
    } finally {
      this.#onHangup(fileno);
    }
  }

  /**
   * book: elif event & select.EPOLLIN: requests[fileno] += recv(1024); once
   * EOL1 or EOL2 is in it, epoll.modify(fileno, EPOLLOUT) and print the head.
   * `chunk` holds the `n` bytes just read (null: the client's end).
   */
  #onReadable(fileno: number, chunk: Uint8Array, n: number | null): EpollEvent {
    if (n === null) {
      // Fixed from the book: its recv() returning b"" (the client gone
      // before its head ended) left the connection registered for EPOLLIN,
      // ready again at once, for ever. Here it is hung up.
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
    // A head that has not ended yet is as long as what came so far.
    const headLength = end < 0 ? request.length : end;
    const tooLarge = headLength > MAX_REQUEST_BYTES;
    if (this.trace) {
      let head = "complete";
      if (tooLarge) head = `over ${MAX_REQUEST_BYTES} bytes`;
      else if (end < 0) head = `not complete (${request.length} bytes so far)`;
      const data = preview(chunk.subarray(0, n));
      this.trace(
        `connection ${fileno}: EPOLLIN, read ${n} bytes ${data}, head ${head}`,
      );
    }
    if (tooLarge) {
      // Not in the book, which read a head without end: past
      // MAX_REQUEST_BYTES the client gets a 431 instead of the page.
      print(`connection ${fileno}: request head too large, sent 431`);
      this.responses.set(fileno, TOO_LARGE_RESPONSE);
      this.rejected.add(fileno);
      return "EPOLLOUT";
    }
    if (end < 0) {
      // Keep what came. A request joined by concat() above is a new buffer
      // already; a first piece still lies in the chunk that is about to be
      // reused, so it is copied out.
      if (old.length > 0) {
        this.requests.set(fileno, request);
      } else {
        this.requests.set(fileno, request.slice());
      }
      return "EPOLLIN";
    }
    printHead(request.subarray(0, end - 2));
    return "EPOLLOUT";
  }

  /**
   * book: elif event & select.EPOLLOUT: responses[fileno] loses the
   * `written` bytes send() took; once it is empty, shutdown(), then EPOLLHUP.
   */
  #onWritable(fileno: number, written: number): EpollEvent {
    const response = this.responses.get(fileno)!;
    if (this.trace) {
      let left = "all sent";
      if (written < response.length) left = `${response.length - written} left`;
      this.trace(
        `connection ${fileno}: EPOLLOUT, sent ${written} bytes, ${left}`,
      );
    }
    if (written < response.length) {
      this.responses.set(fileno, response.subarray(written));
      return "EPOLLOUT";
    }
    return "EPOLLHUP";
  }

  /**
   * Not in the book: after a 431, read what the client still sends until
   * its end of stream (or the deadline's close), then hang up. A client
   * that sent more than 8 KiB of head may still be sending, and closing a
   * socket with unread bytes makes the kernel send a reset, which can
   * destroy the 431 before the client reads it. So `closeWrite()` first
   * sends our end of stream (a FIN, the book's shutdown(SHUT_WR)).
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
    this.trace?.(`connection ${fileno}: dropped ${dropped} more bytes`);
  }

  /**
   * book: elif event & select.EPOLLHUP: epoll.unregister(fileno),
   * connections[fileno].close(), del connections[fileno]. Deno's close()
   * sends our end of stream too (the book's shutdown() before it). The book
   * never deletes requests[fileno] and responses[fileno]; here every map
   * forgets the connection, so a closed connection holds no memory.
   */
  #onHangup(fileno: number): void {
    this.trace?.(`connection ${fileno}: EPOLLHUP, closed`);
    closeQuietly(this.connections.get(fileno)!);
    this.connections.delete(fileno);
    this.requests.delete(fileno);
    this.responses.delete(fileno);
    this.deadlines.delete(fileno);
    this.rejected.delete(fileno);
  }
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

// book: if __name__ == '__main__': argparse, then EpollServer(...).run()
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
      const command = [
        `deno run --allow-net=${allow} ${FILE}`,
        `--host=${args.host}`,
        `--port=${port}`,
      ];
      if (args["header-timeout"] !== undefined) {
        command.push(`--header-timeout=${seconds}`);
      }
      if (args.trace) command.push("--trace");
      console.error(
        `Error: --host=${args.host} needs network permission for it: ` +
          command.join(" "),
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
  const shutdown = () => server.shutdown();
  // Installed before the ready line: a Ctrl-C right after it shuts down.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, shutdown);
  }
  const host = args.host.includes(":") ? `[${args.host}]` : args.host;
  print(`Listening on http://${host}:${server.sock.addr.port}/`);
  await server.run();
  // A terminal's Ctrl-C reaches `deno task` and this script at once, and
  // `deno task` then forwards it to the script: a second SIGINT comes a
  // moment after the first. While the listeners are in place it does
  // nothing (the shutdown is done), but one that comes while the process is
  // ending finds none and kills it with 130. So wait SIGNAL_GRACE_MS for it,
  // then exit at once (ending by itself, Deno would first tear the runtime
  // down and drop the listeners, a longer window).
  await new Promise((resume) => setTimeout(resume, SIGNAL_GRACE_MS));
  flushPrinted(); // Deno.exit() would drop what the batch still holds
  Deno.exit(0);
}
