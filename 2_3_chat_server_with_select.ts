/**
 * Recipe 2_3: "Writing a chat server using select.select" (Python Network
 * Programming Cookbook, chapter 2), ported to Deno: the server and its client
 * in one script, as in the book. Run the server, then a client per terminal:
 *
 *     deno task 2_3 --name=server --port=8800
 *     deno task 2_3 --name=client1 --port=8800
 *     deno task 2_3 --name=client2 --port=8800
 *     # the task is: deno run --allow-net=localhost,127.0.0.1 2_3_chat_server_with_select.ts
 *
 * Type lines into a client. A line typed into the server stops it, as does
 * Ctrl-C. `nc localhost 8800` connects but cannot chat: the protocol is binary
 * frames, so your text reads as a huge frame length and nc is dropped.
 *
 * From Python to Deno:
 * - `select.select(inputs, outputs, [])` returned whatever was ready. Here each
 *   input is an async iterable of events (new connections, stdin lines, each
 *   client's frames, Ctrl-C) and `MuxAsyncIterator` merges them in arrival
 *   order, so `run()` keeps the book's loop and its three branches. As with
 *   select, a client is read again only once the loop took its last event,
 *   which holds every whole frame that one read brought: a burst goes on to
 *   each other client in one write.
 * - select's write set becomes a queue and one writer per client
 *   (`Channel.send`): writing to one client never waits on another.
 * - A frame is a 4-byte big-endian length, then UTF-8 JSON: the array of
 *   `send()`'s args. The book used pickle, which runs any code a peer sends,
 *   behind a `struct.pack("L")` length (8 bytes on 64-bit Linux, 4 on
 *   Windows). Connection ids count from 1: Deno has no `fileno()`.
 *
 * Fixed from the book:
 * - One silent connection froze everyone: the name was read with a blocking
 *   `receive()` right after accept. Here NAME is that connection's first
 *   event, due within 10 seconds.
 * - `receive()` lost data when TCP split a frame; `send()` wrote header and
 *   payload separately (Nagle delays). Frames are read whole and written in
 *   one buffer, with `setNoDelay(true)`.
 * - Bounds: a frame over 64 KiB, a frame cut short by a hang-up, bytes that
 *   are not a JSON array of text, a first frame that is not `NAME: ...`, or
 *   1 MiB queued for a client that stopped reading: that client is dropped
 *   with a log line, and everyone else carries on.
 * - End of stdin no longer spins the loop: server and client keep running.
 *   The client count also goes down for a dropped client, not only a clean
 *   hang-up, and the client refuses a line too long to send.
 */

import { parseArgs } from "@std/cli/parse-args";
import { concat } from "@std/bytes/concat";
import { MuxAsyncIterator } from "@std/async/mux-async-iterator";

const SERVER_HOST = "localhost";
const CHAT_SERVER_NAME = "server";
const MAX_FRAME_BYTES = 64 * 1024;
const MAX_QUEUE_BYTES = 1024 * 1024;
const NAME_TIMEOUT_MS = 10_000;
const READ_SIZE = 16 * 1024;
const SIGNALS = Deno.build.os === "windows"
  ? ["SIGINT"]
  : ["SIGINT", "SIGTERM"];
const USAGE =
  "usage: 2_3_chat_server_with_select.ts [-h] --name NAME --port PORT";
const HELP = `${USAGE}

Socket Server Example with Select, ported to Deno: --name=${CHAT_SERVER_NAME} runs
the server, any other name a client; --port=0 gives a server a free port.`;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** What a loop waits on: the book's `inputs`, as events. */
type Event =
  | { source: "server"; conn: Deno.TcpConn }
  | { source: "stdin"; line: string }
  | { source: "signal" }
  | { source: "client"; channel: Channel; data: string[] | null };
type Mux = AsyncIterable<Event> & { add(it: AsyncIterable<Event>): void };

class FrameError extends Error {}

/** What the book's `send()` wrote, as one buffer: length, then JSON. */
export function frame(...args: string[]): Uint8Array {
  const json = encoder.encode(JSON.stringify(args));
  const bytes = new Uint8Array(4 + json.length);
  new DataView(bytes.buffer).setUint32(0, json.length);
  bytes.set(json, 4);
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
  throw new FrameError("a frame that is not a JSON array of text");
}

/**
 * One end of a connection: the book's `receive()` (a whole frame, however TCP
 * splits it) and `send()` (a queue, and one writer making one write a turn).
 */
export class Channel {
  /** Why the connection ended, unless it was a clean hang-up. */
  dropReason?: string;
  deadline?: ReturnType<typeof setTimeout>;
  maxFrame = MAX_FRAME_BYTES;
  #buf = new Uint8Array(READ_SIZE);
  #start = 0;
  #end = 0;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;

  constructor(readonly conn: Deno.TcpConn, readonly id = 0) {
    conn.setNoDelay(true);
  }

  /** The first of the next frame's args; null at a clean end. */
  async receive(): Promise<string | null> {
    while (this.dropReason === undefined) {
      const data = this.#next();
      if (data !== undefined) return data;
      // Move the partial frame to the front, in a buffer big enough for it.
      const have = this.#end - this.#start;
      const room = Math.max(READ_SIZE, 4 + this.#size());
      const buf = this.#buf.length < room ? new Uint8Array(room) : this.#buf;
      buf.set(this.#buf.subarray(this.#start, this.#end));
      [this.#buf, this.#start, this.#end] = [buf, 0, have];
      const n = await this.conn.read(buf.subarray(have));
      if (n === null && have > 0) throw new FrameError("hung up mid-frame");
      if (n === null) return null;
      this.#end += n;
    }
    return null;
  }

  /** The next frame if it is whole in the buffer, without reading. */
  #next(): string | undefined {
    const [have, size] = [this.#end - this.#start, this.#size()];
    if (size > this.maxFrame) {
      throw new FrameError(`a ${size}-byte frame, over ${this.maxFrame}`);
    }
    if (have < 4 || have < 4 + size) return undefined;
    this.#start += 4 + size;
    return parse(this.#buf.subarray(this.#start - size, this.#start));
  }

  /** The length in the buffered header; 0 until 4 bytes are in. */
  #size(): number {
    if (this.#end - this.#start < 4) return 0;
    return new DataView(this.#buf.buffer).getUint32(this.#start);
  }

  /**
   * This connection's frames as events, each with the frames that one read
   * brought (so a burst is sent on in one write); the last has data null.
   * It never throws: MuxAsyncIterator would rethrow and end the whole loop.
   */
  async *events(): AsyncGenerator<Event> {
    try {
      for (let data; (data = await this.receive()) !== null;) {
        const batch = [data];
        for (let more; (more = this.#next()) !== undefined;) batch.push(more);
        yield { source: "client", channel: this, data: batch };
      }
    } catch (e) {
      this.dropReason ??= e instanceof FrameError ? e.message : String(e);
    }
    yield { source: "client", channel: this, data: null };
  }

  /** Queues a frame; past MAX_QUEUE_BYTES waiting, the peer is dropped. */
  send(bytes: Uint8Array): void {
    if (this.dropReason !== undefined) return;
    this.#queued += bytes.length;
    if (this.#queued > MAX_QUEUE_BYTES) {
      return this.close("stopped reading: over 1 MiB queued");
    }
    this.#queue.push(bytes);
    if (!this.#writing) this.#flush();
  }

  /** The one writer: all that is queued goes out in one write per turn. */
  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0) {
        const queue = this.#queue;
        const chunk = queue.length === 1 ? queue[0] : concat(queue);
        this.#queue = [];
        for (let rest = chunk; rest.length > 0;) {
          rest = rest.subarray(await this.conn.write(rest));
        }
        this.#queued -= chunk.length;
      }
    } catch (error) {
      this.close(`write failed: ${error}`);
    }
    this.#writing = false;
  }

  /** Closes the connection; that ends a pending read, so `events()` ends. */
  close(reason = "closed"): void {
    this.dropReason ??= reason;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

async function* accepts(listener: Deno.TcpListener): AsyncGenerator<Event> {
  while (true) {
    try {
      yield { source: "server", conn: await listener.accept() };
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return; // listener closed
      // One client that resets before it is accepted must not end the server.
      console.error(`accept failed: ${error}`);
    }
  }
}

/** Lines from stdin. At its end, no more events (the book's loop spun). */
async function* stdinLines(): AsyncGenerator<Event> {
  const text = new TextDecoder();
  let rest = "";
  try {
    for await (const chunk of Deno.stdin.readable) {
      const lines = (rest + text.decode(chunk, { stream: true })).split("\n");
      rest = lines.pop()!;
      for (const line of lines) yield { source: "stdin", line };
    }
  } catch {
    // stdin closed under us: the same as its end
  }
  if (rest) yield { source: "stdin", line: rest };
}

/** Ctrl-C (or SIGTERM) as an event: the book's signal handler. */
async function* interrupts(): AsyncGenerator<Event> {
  await new Promise<void>((resolve) => {
    for (const s of SIGNALS) Deno.addSignalListener(s as Deno.Signal, resolve);
  });
  yield { source: "signal" };
}

/** An example chat server: one loop over whatever is ready, as with select. */
export class ChatServer {
  clients = 0;
  /** Named clients (the book's `outputs`), each with its `name@ip`. */
  clientmap = new Map<Channel, string>();
  /** Every connection, named or not (the clients in the book's `inputs`). */
  channels = new Set<Channel>();
  readonly server: Deno.TcpListener;

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

  async run(): Promise<never> {
    const inputs: Mux = new MuxAsyncIterator();
    inputs.add(accepts(this.server));
    inputs.add(stdinLines());
    inputs.add(interrupts());
    let lastId = 0;
    for await (const event of inputs) {
      if (event.source === "server") {
        // The server socket: a connection, whose NAME comes as an event.
        const channel = new Channel(event.conn, ++lastId);
        const { hostname, port } = event.conn.remoteAddr;
        const from = `('${hostname}', ${port})`;
        console.log(`Chat server: got connection ${channel.id} from ${from}`);
        const late = `sent no name within ${NAME_TIMEOUT_MS / 1000} s`;
        const drop = () => channel.close(late);
        channel.deadline = setTimeout(drop, NAME_TIMEOUT_MS);
        this.channels.add(channel);
        inputs.add(channel.events());
      } else if (event.source === "stdin") {
        break; // Standard input: a line stops the server.
      } else if (event.source === "signal") {
        console.log("Shutting down server...");
        break;
      } else {
        this.#receive(event.channel, event.data); // All other sockets
      }
    }
    this.server.close();
    for (const channel of this.channels) channel.close();
    Deno.exit(0); // a pending stdin read would keep the process alive
  }

  /** All other sockets: a name, messages, or a client gone. */
  #receive(channel: Channel, batch: string[] | null): void {
    if (batch === null) return this.#hangUp(channel);
    const messages: Uint8Array[] = [];
    for (const data of batch) {
      if (channel.dropReason !== undefined) return;
      const name = this.clientmap.get(channel);
      if (name) messages.push(frame(`\n#[${name}]>>${data}`));
      else this.#handshake(channel, data);
    }
    // Send the client's messages to all except itself, in one buffer.
    if (messages.length > 0) this.#broadcast(concat(messages), channel);
  }

  /** What the book did at accept time, now as this connection's first frame. */
  #handshake(channel: Channel, data: string): void {
    if (!data.startsWith("NAME: ")) return channel.close("no NAME: first");
    clearTimeout(channel.deadline);
    const host = channel.conn.remoteAddr.hostname;
    this.clients += 1;
    channel.send(frame(`CLIENT: ${host}`));
    const cname = `${data.slice("NAME: ".length)}@${host}`;
    const joined = `\n(Connected: New client (${this.clients}) from ${cname})`;
    this.#broadcast(frame(joined));
    this.clientmap.set(channel, cname);
  }

  #hangUp(channel: Channel): void {
    const why = channel.dropReason;
    clearTimeout(channel.deadline);
    channel.close();
    this.channels.delete(channel);
    const how = why ? `dropped: ${why}` : "hung up";
    console.log(`Chat server: ${channel.id} ${how}`);
    const name = this.clientmap.get(channel);
    if (!this.clientmap.delete(channel)) return;
    this.clients -= 1;
    this.#broadcast(frame(`\n(Now hung up: Client from ${name})`));
  }

  /** Frames, encoded once, queued for every named client but `except`. */
  #broadcast(bytes: Uint8Array, except?: Channel): void {
    for (const output of this.clientmap.keys()) {
      if (output !== except) output.send(bytes);
    }
  }
}

/** A command line chat client: stdin and the socket, waited on at once. */
export class ChatClient {
  prompt = "";
  channel!: Channel;

  constructor(readonly name: string, readonly port: number) {}

  /** The book's constructor: connect, send the name, learn our address. */
  async connect(): Promise<void> {
    try {
      const { port } = this;
      const conn = await Deno.connect({ hostname: SERVER_HOST, port });
      this.channel = new Channel(conn);
      // The server's frames carry our messages plus a name: allow for both.
      this.channel.maxFrame = 3 * MAX_FRAME_BYTES;
      console.log(`Now connected to chat server@ port ${this.port}`);
      this.channel.send(frame(`NAME: ${this.name}`));
      const data = await this.channel.receive();
      if (!data?.startsWith("CLIENT: ")) throw new Error("no CLIENT: reply");
      this.prompt = `[${this.name}@${data.slice("CLIENT: ".length)}]> `;
    } catch {
      console.log(`Failed to connect to chat server @ port ${this.port}`);
      Deno.exit(1);
    }
  }

  async run(): Promise<never> {
    const inputs: Mux = new MuxAsyncIterator();
    inputs.add(stdinLines());
    inputs.add(this.channel.events());
    inputs.add(interrupts());
    const prompt = encoder.encode(this.prompt); // no newline: no console.log
    Deno.stdout.writeSync(prompt);
    for await (const event of inputs) {
      if (event.source === "stdin") {
        const data = event.line.trim();
        const bytes = frame(data);
        const tooLong = bytes.length > 4 + MAX_FRAME_BYTES;
        if (tooLong) console.log(`(not sent: over ${MAX_FRAME_BYTES} bytes)`);
        else if (data) this.channel.send(bytes);
      } else if (event.source === "signal") {
        console.log(" Client interrupted. ");
        break;
      } else if (event.source === "client" && event.data !== null) {
        console.log(event.data.join(`\n${this.prompt}`)); // a prompt each
      } else {
        console.log("Client shutting down.");
        break;
      }
      Deno.stdout.writeSync(prompt);
    }
    this.channel.close();
    Deno.exit(0);
  }
}

/** argparse's behaviour: usage and a one-line error on stderr, exit 2. */
function argumentError(message: string): never {
  console.error(`${USAGE}\n2_3_chat_server_with_select.ts: error: ${message}`);
  Deno.exit(2);
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["name", "port"],
    boolean: ["help"],
    alias: { h: "help" },
    unknown: (arg: string) => argumentError(`unrecognized arguments: ${arg}`),
  });
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const missing = ["--name", "--port"].filter((f) => !(f.slice(2) in args));
  if (missing.length > 0) {
    const list = missing.join(", ");
    argumentError(`the following arguments are required: ${list}`);
  }
  const port = Number(args.port);
  if (!/^\d+$/.test(args.port) || port > 65535) {
    argumentError(`argument --port: invalid port value: '${args.port}'`);
  }
  if (args.name === CHAT_SERVER_NAME) {
    await new ChatServer(port).run();
  } else {
    const client = new ChatClient(args.name, port);
    await client.connect();
    await client.run();
  }
}
