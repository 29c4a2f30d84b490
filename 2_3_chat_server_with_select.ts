/**
 * Recipe 2_3: "Writing a chat server using select.select" (Python Network
 * Programming Cookbook, chapter 2) in Deno: server and client in one script,
 * as in the book. Run the server, then a client per terminal:
 *
 *     deno task 2_3 --name=server --port=8800
 *     deno task 2_3 --name=client1 --port=8800
 *     deno task 2_3 --name=client2 --port=8800
 *     # the task is: deno run --allow-net=localhost,127.0.0.1 2_3_chat_server_with_select.ts
 *
 * Type lines into a client; a line typed into the server stops it, as does
 * Ctrl-C. `nc localhost 8800` cannot chat: its text reads as a frame length.
 *
 * From Python to Deno: select's inputs (connections, stdin, clients, Ctrl-C)
 * become async iterables of events merged by `MuxAsyncIterator`, so `run()`
 * keeps the book's loop and branches; as with select, a client is read again
 * once the loop took its last event (all the frames one read brought). The
 * write set becomes a queue and one writer per client. A frame is a 4-byte
 * big-endian length (the book's `struct.pack("L")` took 8 on 64-bit Linux) and
 * UTF-8 JSON, not pickle (which runs any code a peer sends). Connection ids
 * count from 1: Deno has no `fileno()`.
 *
 * Fixed from the book:
 * - One silent connection froze everyone (its name was read with a blocking
 *   `receive()`): NAME is now its first event, due within 10 seconds.
 * - `receive()` lost data when TCP split a frame; `send()` wrote one in two
 *   parts (Nagle delays). Frames are read whole, written in one buffer.
 * - A frame over 64 KiB or cut short, bytes that are not a JSON array of text,
 *   a first frame other than NAME, or 1 MiB queued for a client that stopped
 *   reading: that client is dropped with a log line.
 * - End of stdin no longer spins the loop: the server stops watching it; a
 *   client sends what was typed, says it is leaving and exits 0. Stdin is
 *   read with plain `Deno.stdin.read()` calls, so no line is lost.
 * - A dropped client is counted out; the client refuses a line too long to
 *   send. Ctrl-C shuts down once, with its listeners installed before the
 *   ready line; a connection that reset before accept() only gets a log line.
 */

import { parseArgs } from "@std/cli/parse-args";
import { concat } from "@std/bytes/concat";
import { MuxAsyncIterator } from "@std/async/mux-async-iterator";
import { delay } from "@std/async/delay";

const SERVER_HOST = "localhost";
const CHAT_SERVER_NAME = "server";
const MAX_FRAME_BYTES = 64 * 1024;
const MAX_QUEUE_BYTES = 1024 * 1024;
const NAME_TIMEOUT_MS = 10_000;
const MAX_NAME_CHARS = 64; // a name is repeated in every message it sends
const READ_SIZE = 16 * 1024;
const STDIN_READ_BYTES = 16 * 1024;
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const LEAVE_FLUSH_MS = 5_000; // how long a leaving client waits to send the rest
const FILE = "2_3_chat_server_with_select.ts";
const USAGE = `usage: ${FILE} [-h] --name NAME --port PORT`;
const HELP = `${USAGE}

Socket Server Example with Select

options:
  -h, --help   show this help message and exit
  --name NAME  "server" runs the chat server; any other name joins it as a
               client of that name
  --port PORT  port the server listens on (0 picks a free one), or the
               port a client connects to`;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** What a loop waits on: the book's `inputs`, as events. */
type Event =
  | { source: "server"; conn: Deno.TcpConn }
  | { source: "stdin"; line: string | null } // null: the end of stdin
  | { source: "signal" }
  | { source: "client"; channel: Channel; data: string[] | null };
type Mux = AsyncIterable<Event> & { add(it: AsyncIterable<Event>): void };

/** What the book's `send()` wrote, in one buffer: the length, then JSON. */
export function frame(...args: string[]): Uint8Array {
  const bytes = encoder.encode(`1234${JSON.stringify(args)}`); // 4 to fill
  new DataView(bytes.buffer).setUint32(0, bytes.length - 4);
  return bytes;
}

/** The book's `pickle.loads(buf)[0]`, for JSON: the first of the args. */
function parse(payload: Uint8Array): string {
  try {
    const args = JSON.parse(decoder.decode(payload));
    if (Array.isArray(args) && typeof args[0] === "string") return args[0];
  } catch {
    // not UTF-8 JSON: the same error as JSON of the wrong shape
  }
  throw new Error("a frame that is not a JSON array of text");
}

/** A connection: the book's `receive()` and `send()`, for whole frames. */
export class Channel {
  dropReason?: string; // why it was closed; undefined while open
  maxFrame = MAX_FRAME_BYTES;
  #chunk = new Uint8Array(READ_SIZE);
  #buf = new Uint8Array(0); // the start of a frame still coming
  #frames: string[] = []; // whole, not yet taken
  #queue: Uint8Array[] = [];
  #queued = 0; // bytes queued or being written: a writer runs while > 0
  #writer?: Promise<void>; // the writer running now, if any
  #deadline?: ReturnType<typeof setTimeout>;

  constructor(readonly conn: Deno.TcpConn, readonly id = 0) {
    conn.setNoDelay(true);
  }

  /** Up to `max` of the frames one read made whole; null at EOF. */
  async receive(max = Infinity): Promise<string[] | null> {
    while (this.#frames.length === 0) {
      const n = await this.conn.read(this.#chunk);
      if (n === null && this.#buf.length === 0) return null;
      if (n === null) throw new Error("hung up mid-frame");
      let buf = concat([this.#buf, this.#chunk.subarray(0, n)]);
      for (let size = 0; buf.length >= 4; buf = buf.subarray(4 + size)) {
        size = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
        if (size > this.maxFrame) {
          throw new Error(`a ${size}-byte frame, over ${this.maxFrame}`);
        }
        if (buf.length < 4 + size) break;
        this.#frames.push(parse(buf.subarray(4, 4 + size)));
      }
      this.#buf = buf;
    }
    return this.#frames.splice(0, max);
  }

  /** An event for each read's frames, then one with null; never throws. */
  async *events(): AsyncGenerator<Event> {
    try {
      for (let data; (data = await this.receive()) !== null;) {
        yield { source: "client", channel: this, data };
      }
    } catch (error) {
      this.close((error as Error).message); // unless closed already
    }
    yield { source: "client", channel: this, data: null };
  }

  /** Queues a frame; past MAX_QUEUE_BYTES waiting, the peer is dropped. */
  send(bytes: Uint8Array): void {
    if (this.dropReason !== undefined) return;
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    if (this.#queued > MAX_QUEUE_BYTES) {
      this.close("stopped reading: over 1 MiB queued");
    } else if (this.#queued === bytes.length) {
      this.#writer = this.#flush(); // no writer yet
    }
  }

  /** Resolves once everything queued so far is written (or the write failed). */
  async drained(): Promise<void> {
    await this.#writer;
  }

  /**
   * Closes it with `reason` unless `clearDeadline()` comes first. The timer
   * holds this Channel (and its buffers) until it fires or is cleared, so
   * both the NAME frame and `close()` clear it: a connection that ended is
   * free to be collected at once, not 10 seconds later.
   */
  setDeadline(ms: number, reason: string): void {
    this.clearDeadline();
    this.#deadline = setTimeout(() => this.close(reason), ms);
  }

  clearDeadline(): void {
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
  }

  /** The one writer: all that is queued goes out in one write per turn. */
  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const queue = this.#queue.splice(0);
        const chunk = queue.length === 1 ? queue[0] : concat(queue);
        for (let rest = chunk; rest.length > 0;) {
          rest = rest.subarray(await this.conn.write(rest));
        }
        this.#queued -= chunk.length;
      }
    } catch (error) {
      this.close(`write failed: ${error}`);
    }
  }

  /** Closes it once; that ends a pending read, and so `events()`. */
  close(reason = "closed"): void {
    if (this.dropReason !== undefined) return;
    this.dropReason = reason;
    this.clearDeadline();
    closeQuietly(this.conn);
  }
}

/** Closes a connection, ignoring "already closed". */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error;
  }
}

/** The book's `select.select(inputs, ...)`: one stream of whatever is ready. */
function select(...inputs: AsyncIterable<Event>[]): Mux {
  const mux = new MuxAsyncIterator();
  for (const input of inputs) mux.add(input);
  return mux;
}

/** Out of descriptors or memory: the only accept() failures a pause helps. */
function isOutOfResources(error: Error): boolean {
  return /os error (12|23|24|105)\b/.test(error.message);
}

/** The listening socket's events: one per accepted connection. */
async function* accepts(listener: Deno.TcpListener): AsyncGenerator<Event> {
  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (error) {
      // shutdown() closed the listener: the book's server.close().
      if (error instanceof Deno.errors.BadResource) return;
      if (isOutOfResources(error as Error)) {
        // Out of descriptors, accept() fails again at once: pause, not spin,
        // since a descriptor may free up meanwhile.
        console.error(`accept failed: ${error}; pausing ${ACCEPT_PAUSE_MS} ms`);
        await delay(ACCEPT_PAUSE_MS);
      } else {
        // One connection failed on its own (say it reset while queued,
        // NotConnected): waiting would help nobody, so accept the next now.
        console.error(`accept failed: ${error}`);
      }
      continue;
    }
    yield { source: "server", conn };
  }
}

/**
 * Lines typed, then one `line: null` event at the end of stdin. A plain
 * `Deno.stdin.read()` loop into our own buffer: every byte read is ours, so
 * no line can be lost (`Deno.stdin.readable` through `TextLineStream` can
 * lose the first one, denoland/deno#35601). A last line without a newline
 * still counts as a line. The book's loop spun at the end of stdin, as
 * `select` kept saying it was readable.
 */
async function* stdinLines(): AsyncGenerator<Event> {
  const chunk = new Uint8Array(STDIN_READ_BYTES);
  const text = new TextDecoder(); // stream: true keeps a character cut in two
  let pending = "";
  while (true) {
    const n = await Deno.stdin.read(chunk);
    if (n === null) break;
    pending += text.decode(chunk.subarray(0, n), { stream: true });
    for (
      let end = pending.indexOf("\n");
      end >= 0;
      end = pending.indexOf("\n")
    ) {
      yield { source: "stdin", line: pending.slice(0, end) };
      pending = pending.slice(end + 1);
    }
  }
  pending += text.decode();
  if (pending !== "") yield { source: "stdin", line: pending };
  yield { source: "stdin", line: null };
}

/**
 * Ctrl-C, or SIGTERM where there is one: the book's signal handler. The
 * listeners are added when this is called (before the ready line, so a
 * Ctrl-C right after it gets the shutdown) and stay until the process
 * exits: a second signal, such as the one a terminal's Ctrl-C delivers to
 * `deno task` and passes on again, finds a listener that does nothing more,
 * instead of Deno's default exit with 130. One event, however many signals.
 */
function interrupts(): AsyncIterable<Event> {
  const { promise, resolve } = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", resolve);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", resolve);
  return (async function* () {
    await promise;
    yield { source: "signal" } as const;
  })();
}

/** An example chat server: one loop over whatever is ready, as with select. */
export class ChatServer {
  clients = 0;
  clientmap = new Map<Channel, string>(); // each connection: name@ip, or ""
  readonly server: Deno.TcpListener;
  #shuttingDown = false;

  constructor(port: number) {
    try {
      this.server = Deno.listen({ hostname: SERVER_HOST, port });
    } catch (error) {
      const why = `${SERVER_HOST}:${port}: ${(error as Error).message}`;
      console.error(`Error: cannot listen on ${why}`);
      Deno.exit(1);
    }
    console.log(`Server listening to port: ${this.server.addr.port} ...`);
  }

  /**
   * The book's loop, over the listening socket, every client and `inputs`
   * (the command line passes stdin and the signals). Returns after
   * `shutdown()`, once the loop has stopped.
   */
  async run(...inputs: AsyncIterable<Event>[]): Promise<void> {
    const ready = select(accepts(this.server), ...inputs);
    let lastId = 0;
    for await (const event of ready) {
      if (event.source === "server") {
        // book: if sock == self.server: a connection, whose NAME comes as an event.
        const channel = new Channel(event.conn, ++lastId);
        const { hostname, port } = event.conn.remoteAddr;
        const from = `('${hostname}', ${port})`;
        console.log(`Chat server: got connection ${channel.id} from ${from}`);
        this.clientmap.set(channel, "");
        ready.add(channel.events());
        const seconds = NAME_TIMEOUT_MS / 1000;
        channel.setDeadline(
          NAME_TIMEOUT_MS,
          `sent no name within ${seconds} s`,
        );
      } else if (event.source === "stdin") {
        // book: elif sock == sys.stdin: a line stops the server; the end of
        // stdin (a server run without a terminal) only stops watching it.
        if (event.line === null) continue;
        this.shutdown();
        break;
      } else if (event.source === "signal") {
        // book: sighandler()
        console.log("Shutting down server...");
        this.shutdown();
        break;
      } else {
        this.#receive(event.channel, event.data); // book: all other sockets
      }
    }
  }

  /**
   * Closes the listening socket and every connection, once: a second call
   * (a second Ctrl-C) does nothing and prints nothing.
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.server.close();
    for (const channel of this.clientmap.keys()) {
      channel.close("closed by server shutdown");
    }
  }

  /** NAME, then messages (to all but their sender, in one buffer); or null. */
  #receive(channel: Channel, batch: string[] | null): void {
    let name = this.clientmap.get(channel);
    if (batch === null) {
      const why = channel.dropReason;
      channel.close();
      this.clientmap.delete(channel);
      const how = why === undefined ? "hung up" : `dropped: ${why}`;
      console.log(`Chat server: ${channel.id} ${how}`);
      if (!name) return;
      this.clients -= 1;
      return this.#broadcast(frame(`\n(Now hung up: Client from ${name})`));
    }
    if (channel.dropReason !== undefined) return; // its end is on its way
    if (!name) {
      const data = batch.shift()!;
      if (!data.startsWith("NAME: ")) return channel.close("no NAME: first");
      if (data.length > 6 + MAX_NAME_CHARS) {
        return channel.close(`a name over ${MAX_NAME_CHARS} characters`);
      }
      channel.clearDeadline();
      const host = channel.conn.remoteAddr.hostname;
      name = `${data.slice("NAME: ".length)}@${host}`;
      this.clients += 1;
      channel.send(frame(`CLIENT: ${host}`));
      const joined = `(Connected: New client (${this.clients}) from ${name})`;
      this.#broadcast(frame(`\n${joined}`));
      this.clientmap.set(channel, name);
    }
    const messages = batch.map((data) => frame(`\n#[${name}]>>${data}`));
    if (messages.length > 0) this.#broadcast(concat(messages), channel);
  }

  /** Frames, encoded once, queued for every named client but `except`. */
  #broadcast(bytes: Uint8Array, except?: Channel): void {
    for (const [output, name] of this.clientmap) {
      if (name && output !== except) output.send(bytes);
    }
  }
}

/** A command line chat client: stdin and the socket, waited on at once. */
export class ChatClient {
  constructor(readonly channel: Channel, readonly prompt: string) {}

  /** The book's constructor: connect, send the name, learn our address. */
  static async connect(name: string, port: number): Promise<ChatClient> {
    try {
      const conn = await Deno.connect({ hostname: SERVER_HOST, port });
      console.log(`Now connected to chat server@ port ${port}`);
      const channel = new Channel(conn);
      channel.maxFrame = 3 * MAX_FRAME_BYTES; // our text, plus a name
      channel.send(frame(`NAME: ${name}`));
      const [data] = (await channel.receive(1)) ?? [];
      if (!data?.startsWith("CLIENT: ")) throw new Error("no CLIENT: reply");
      const address = data.slice("CLIENT: ".length);
      return new ChatClient(channel, `[${name}@${address}]> `);
    } catch {
      console.log(`Failed to connect to chat server @ port ${port}`);
      Deno.exit(1);
    }
  }

  /** The book's client loop: returns when the client is done. */
  async run(...inputs: AsyncIterable<Event>[]): Promise<void> {
    const ready = select(this.channel.events(), ...inputs);
    const prompt = encoder.encode(this.prompt); // no newline: no console.log
    Deno.stdout.writeSync(prompt);
    for await (const event of ready) {
      if (event.source === "stdin") {
        // book: if sock == 0:
        if (event.line === null) {
          // The end of stdin (Ctrl-D, or the end of a pipe): what was typed
          // is queued already; send it, then leave. The book went on
          // reading the socket while nothing typed could be sent any more.
          console.log(" Client leaving: end of input. ");
          await this.leave();
          return;
        }
        const line = event.line.trim();
        const bytes = frame(line);
        if (bytes.length > 4 + MAX_FRAME_BYTES) {
          console.log(`(not sent: over ${MAX_FRAME_BYTES} bytes)`);
        } else if (line) this.channel.send(bytes);
      } else if (event.source === "signal") {
        // book: except KeyboardInterrupt:
        console.log(" Client interrupted. ");
        break;
      } else if (event.source === "client" && event.data !== null) {
        // book: elif sock == self.sock:
        console.log(event.data.join(`\n${this.prompt}`)); // a prompt each
      } else {
        console.log("Client shutting down.");
        break;
      }
      Deno.stdout.writeSync(prompt);
    }
    this.channel.close();
  }

  /** Sends what is queued (for at most LEAVE_FLUSH_MS), then closes. */
  async leave(): Promise<void> {
    const timeout = new AbortController();
    await Promise.race([
      this.channel.drained(),
      delay(LEAVE_FLUSH_MS, { signal: timeout.signal }).catch(() => {}),
    ]);
    timeout.abort();
    this.channel.close();
  }
}

/** argparse: usage and `FILE: error: message` on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["name", "port"],
    boolean: ["help"],
    alias: { h: "help" },
    unknown: (arg: string) => argumentError(`unrecognized arguments: ${arg}`),
  });
  const missing = ["name", "port"].filter((f) => !(f in args)).join(", --");
  const port = Number(args.port);
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  if (missing) {
    argumentError(`the following arguments are required: --${missing}`);
  }
  if (!/^\d+$/.test(args.port) || port > 65535) {
    argumentError(`argument --port: invalid port value: '${args.port}'`);
  }
  // Signal listeners first: a Ctrl-C right after the ready line is ours.
  const signals = interrupts();
  if (args.name === CHAT_SERVER_NAME) {
    await new ChatServer(port).run(stdinLines(), signals);
  } else {
    await (await ChatClient.connect(args.name, port)).run(
      stdinLines(),
      signals,
    );
  }
  Deno.exit(0); // a pending stdin read would keep the process alive
}
