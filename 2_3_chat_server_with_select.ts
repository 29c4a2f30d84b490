/**
 * Recipe 2_3: "Writing a chat server using select.select" (Python Network
 * Programming Cookbook, chapter 2) in Deno: server and client in one script,
 * as in the book. Run the server, then a client per terminal, and type:
 *
 *     deno task 2_3 --name=server --port=8800
 *     deno task 2_3 --name=client1 --port=8800
 *     deno task 2_3 --name=client2 --port=8800
 *
 * A line typed into the server stops it, as does Ctrl-C. The book's own
 * Python clients join this server, and `--wire=book` lets a Deno client join
 * the book's server (the README shows both).
 *
 * From Python to Deno: select's inputs (the listening socket, stdin, the
 * clients, Ctrl-C) become async iterables of events merged into one
 * (`select()` below), so each `run()` keeps the book's loop and branches; a
 * client's event holds the frames one read made whole. The write set becomes
 * a queue and one writer per client. Connections count from 1 (no fileno()).
 *
 * Fixed from the book:
 * - `pickle.loads` ran what a peer sent: a strict decoder reads book frames.
 * - One silent connection froze all: NAME is its first event, due in 10 s.
 * - `receive()` lost data when TCP split a frame: frames are read whole.
 * - `send()` wrote a frame in two parts (Nagle): one write, no delay.
 * - A bad frame, one over 64 KiB, 1 MiB queued: that client alone is dropped.
 * - The end of stdin spun the loop: the server stops watching it; a client
 *   sends what was typed and leaves.
 * - The client's handshake waited for ever: Ctrl-C ends it; 10 s bound it.
 * - Ctrl-C shuts down once; a client dropped for an error is counted out.
 */

import { parseArgs } from "@std/cli/parse-args";
import { concat } from "@std/bytes/concat";
import { MuxAsyncIterator } from "@std/async/mux-async-iterator";
import { delay } from "@std/async/delay";

// book: import select
// book: import socket
// book: import sys
// book: import signal
// book: import pickle
// book: import struct
// book: import argparse
// Deno's own APIs do what these modules did (Deno.listen, Deno.stdin,
// Deno.addSignalListener); pickle and struct are the frame code below, and
// argparse the command line's section at the end.
// book: SERVER_HOST = 'localhost'
const SERVER_HOST = "localhost";
// book: CHAT_SERVER_NAME = 'server'
const CHAT_SERVER_NAME = "server";

/**
 * The book's `send()`: the bytes of one frame of `wire`, header and body in
 * one buffer, which `Channel.send()` writes in one write (the book's two
 * `channel.send()` calls let Nagle's algorithm hold the second one back).
 */
// book: def send(channel, *args):
export function encodeFrame(text: string, wire: Wire): Uint8Array {
  // book: buffer = pickle.dumps(args)
  // The book's wire pickles; this project's wire writes JSON.
  const body = wire === "json"
    ? encoder.encode(JSON.stringify([text]))
    : encodeBookPickle(text);
  const header = HEADER_BYTES[wire];
  const bytes = new Uint8Array(header + body.length);
  // book: value = socket.htonl(len(buffer))
  // book: size = struct.pack("L",value)
  // A DataView writes big-endian by default: htonl's byte order. book8's
  // other 4 header bytes stay 0.
  new DataView(bytes.buffer).setUint32(0, body.length);
  // book: channel.send(size)
  // book: channel.send(buffer)
  // Header and body go into one buffer; Channel.send() writes it.
  bytes.set(body, header);
  return bytes;
}

/** What `takeFrame` found: a frame and its size, or how many bytes it needs. */
export type Taken =
  | { text: string; size: number }
  | { text: undefined; need: number };

/**
 * The book's `receive()`, as a pure function: the first whole frame at the
 * start of `bytes`, or how many bytes a whole frame needs; `Channel.receive()`
 * reads until it has them. Throws for a bad frame: a length over `maxFrame`,
 * a book header whose last 4 bytes are not zero, or a body that is not an
 * array of one text (JSON) or a pickled 1-tuple of one str (the book's, read
 * by the strict decoder below, never by an unpickler).
 */
// book: def receive(channel):
export function takeFrame(
  bytes: Uint8Array,
  wire: Wire,
  maxFrame: number,
): Taken {
  // book: size = struct.calcsize("L")
  const header = HEADER_BYTES[wire];
  // book: size = channel.recv(size)
  // The book's recv() here could return fewer bytes than a header: wait for
  // them all.
  if (bytes.length < header) return { text: undefined, need: header };
  // book: try:
  // book: size = socket.ntohl(struct.unpack("L", size)[0])
  // book: except struct.error as e:
  // book: return ''
  // frameLength() reads the big-endian length and throws when it is too
  // long; a header cut short cannot happen here (it was waited for above).
  const length = frameLength(bytes, maxFrame)!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (wire === "book8" && view.getUint32(4) !== 0) {
    throw new Error("a book header whose last 4 bytes are not zero");
  }
  // book: buf = ""
  // book: while len(buf) < size:
  // book: buf = channel.recv(size - len(buf))
  // The book's loop kept only the last recv() (it lost data when TCP split a
  // frame): here the whole frame must be in `bytes`, or more is needed.
  const size = header + length;
  if (bytes.length < size) return { text: undefined, need: size };
  const body = bytes.subarray(header, size);
  // book: return pickle.loads(buf)[0]
  return { text: wire === "json" ? parseJson(body) : parsePickle(body), size };
}

/**
 * The book's ChatServer: one loop over whatever is ready, as with select.
 * `trace`, when given (`--trace`), gets one line per event the loop handles:
 * what `select` would have returned, and what the loop did with it. When it
 * is not, each `this.trace?.(...)` below stops at the `?.`, before its line
 * is built: tracing off costs nothing.
 */
// book: class ChatServer(object):
export class ChatServer {
  // book: def __init__(self, port, backlog=5):
  // book: self.clients = 0
  clients = 0;
  // book: self.clientmap = {}
  // book: self.outputs = [] # list output sockets
  // Each connection's name@ip (the book's get_client_name()), or "" until
  // it sends its NAME; the named ones are the book's outputs.
  clientmap = new Map<Channel, string>();
  readonly server: Deno.TcpListener;
  #shuttingDown = false;

  constructor(port: number, readonly trace?: Trace) {
    // book: self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    // book: self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    // book: self.server.bind((SERVER_HOST, port))
    // `Deno.listen()` is socket(), bind() and listen() in one, with
    // SO_REUSEADDR set (on Unix) as the book sets it; listenOrExit() says
    // why when it cannot.
    this.server = listenOrExit(port, trace);
    // book: print ('Server listening to port: %s ...' %port)
    console.log(`Server listening to port: ${this.server.addr.port} ...`);
    // book: self.server.listen(backlog)
    // Deno.listen() above listens already, with the system's backlog.
    // book: signal.signal(signal.SIGINT, self.sighandler)
    // The signals are one of run()'s inputs (`interrupts()`, installed by
    // main before this line), and run() calls sighandler() for one.
  }

  // book: def sighandler(self, signum, frame):
  sighandler(signal: Deno.Signal): void {
    this.trace?.(`signal: ${signal} -> shutdown`);
    // book: print ('Shutting down server...')
    console.log("Shutting down server...");
    this.shutdown();
  }

  /**
   * The book's closing, in sighandler and after the loop: closes every
   * connection and the listening socket, once. A second call (a second
   * Ctrl-C) does nothing and prints nothing.
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    // book: for output in self.outputs:
    // book: output.close()
    for (const channel of this.clientmap.keys()) {
      channel.close("closed by server shutdown");
    }
    // book: self.server.close()
    this.server.close();
  }

  // book: def get_client_name(self, client):
  getClientName(client: Channel): string | undefined {
    // book: info = self.clientmap[client]
    // book: host, name = info[0][0], info[1]
    // book: return '@'.join((name, host))
    // The map keeps name@host, joined once when the name comes (#name()).
    return this.clientmap.get(client) || undefined;
  }

  /**
   * The book's loop, over the listening socket, every client and `inputs`
   * (main passes stdin's lines and the signals). Returns once it stops.
   */
  // book: def run(self):
  async run(...inputs: AsyncIterable<Event>[]): Promise<void> {
    // book: inputs = [self.server, sys.stdin]
    const ready = select(accepts(this.server), ...inputs);
    // book: self.outputs = []
    // The outputs are the named entries of clientmap.
    let lastId = 0;
    // book: running = True
    // book: while running:
    // book: try:
    // book: readable, writeable, exceptional = select.select(inputs, self.outputs, [])
    // book: except select.error as e:
    // book: break
    // One event at a time, each from one input that was ready; `break` ends
    // the loop (where the book set running = False). Waiting on the inputs
    // cannot fail: each turns its errors into events (a stdin that cannot be
    // read ends as at the end of input).
    // book: for sock in readable:
    for await (const event of ready) {
      // book: if sock == self.server:
      if (event.source === "server") {
        // book: client, address = self.server.accept()
        // accepts() took it from the listening socket: event.conn.
        lastId += 1; // the book's client.fileno(), which Deno does not have
        const client = new Channel(event.conn, lastId);
        const address = pythonAddress(event.conn.remoteAddr);
        // book: print ("Chat server: got connection %d from %s" % (client.fileno(), address))
        console.log(`Chat server: got connection ${client.id} from ${address}`);
        // book: cname = receive(client).split('NAME: ')[1]
        // book: self.clients += 1
        // book: send(client, 'CLIENT: ' + str(address[0]))
        // The name is the connection's first frame, whenever it comes:
        // #name() does these three lines and the five after the next one
        // then. The book's blocking receive() here froze every client until
        // the name came.
        this.clientmap.set(client, "");
        // book: inputs.append(client)
        ready.add(client.events());
        // book: self.clientmap[client] = (address, cname)
        // book: msg = "\n(Connected: New client (%d) from %s)" % (self.clients, self.get_client_name(client))
        // book: for output in self.outputs:
        // book: send(output, msg)
        // book: self.outputs.append(client)
        // (in #name(), as said above)
        this.#nameDue(client, address);
        // book: elif sock == sys.stdin:
      } else if (event.source === "stdin") {
        // book: junk = sys.stdin.readline()
        // stdinLines() read it: event.line, or null at the end of stdin,
        // where the book's loop spun; this one stops watching stdin.
        if (event.line === null) {
          this.trace?.("readable: sys.stdin -> its end, no longer watched");
          continue;
        }
        // book: running = False
        this.trace?.("readable: sys.stdin -> a line, the server stops");
        break;
      } else if (event.source === "signal") {
        // The book's signal handler ran outside its loop.
        this.sighandler(event.signal);
        break;
      } else {
        // book: else:
        // book: try:
        // book: data = receive(sock)
        // Channel.events() read it: the frames one read made whole, or null
        // once the connection is gone.
        const sock = event.channel;
        const data = event.data;
        // book: if data:
        if (data !== null) {
          // #name() takes a new client's NAME first: the rest is relayed.
          const messages = this.#name(sock, data, event.bytes);
          if (messages.length === 0) continue;
          const name = this.getClientName(sock);
          // book: msg = '\n#[' + self.get_client_name(sock) + ']>>' + data
          const msg = messages.map((text) => `\n#[${name}]>>${text}`);
          // book: for output in self.outputs:
          // book: if output != sock:
          // book: send(output, msg)
          const told = this.#broadcast(msg, sock);
          this.trace?.(
            this.#read(sock, data, event.bytes) +
              ` -> ${plural(messages.length, "message")} from ${name} ` +
              `relayed to ${plural(told, "client")}`,
          );
          // book: else:
        } else {
          const name = this.getClientName(sock);
          const why = sock.dropReason; // before close() sets it
          const how = why === undefined ? "hung up" : `dropped: ${why}`;
          // book: print ("Chat server: %d hung up" % sock.fileno())
          console.log(`Chat server: ${sock.id} ${how}`);
          // book: self.clients -= 1
          if (name) this.clients -= 1;
          // book: sock.close()
          sock.close();
          // book: inputs.remove(sock)
          // book: self.outputs.remove(sock)
          // Its events() ended with this null event; out of the map, it is
          // out of the outputs.
          this.clientmap.delete(sock);
          // book: msg = "\n(Now hung up: Client from %s)" % self.get_client_name(sock)
          // book: for output in self.outputs:
          // book: send(output, msg)
          let told = 0;
          if (name) {
            told = this.#broadcast([`\n(Now hung up: Client from ${name})`]);
          }
          this.#traceHangUp(sock, name, why, told);
        }
        // book: except socket.error as e:
        // book: inputs.remove(sock)
        // book: self.outputs.remove(sock)
        // A broken connection ends its events() with null too, so it is
        // removed above, and its log line says why ("dropped: ...").
      }
    }
    // book: self.server.close()
    this.shutdown();
  }

  /**
   * Not in the book: a new connection's NAME deadline (see
   * Channel.setDeadline), and its trace line.
   */
  #nameDue(client: Channel, address: string): void {
    const seconds = NAME_TIMEOUT_MS / 1000;
    client.setDeadline(NAME_TIMEOUT_MS, `sent no name within ${seconds} s`);
    this.trace?.(
      `readable: the server socket -> accepted connection ${client.id} ` +
        `from ${address}, its NAME due within ${seconds} s`,
    );
  }

  /**
   * The book's naming, which it did in the accept branch with a blocking
   * `receive()`: a new client's first frame must be its NAME (else it is
   * dropped), which gets the CLIENT: reply and a join notice to the others.
   * Returns the frames left to relay as messages: none for a dropped client.
   */
  #name(channel: Channel, frames: string[], bytes: number): string[] {
    if (channel.dropReason !== undefined) {
      this.trace?.(this.#read(channel, frames, bytes) + " -> ignored: dropped");
      return []; // its end is on its way
    }
    if (this.clientmap.get(channel)) return frames; // named already
    const data = frames[0];
    if (!data.startsWith(NAME_PREFIX)) {
      this.trace?.(this.#read(channel, frames, bytes) + " -> not NAME: drop");
      channel.close("no NAME: first");
      return [];
    }
    if (data.length > NAME_PREFIX.length + MAX_NAME_CHARS) {
      this.trace?.(
        this.#read(channel, frames, bytes) + " -> a long name: drop",
      );
      channel.close(`a name over ${MAX_NAME_CHARS} characters`);
      return [];
    }
    channel.clearDeadline();
    // cname = receive(client).split('NAME: ')[1]
    const host = channel.conn.remoteAddr.hostname;
    const name = `${data.slice(NAME_PREFIX.length)}@${host}`;
    this.clients += 1;
    // send(client, 'CLIENT: ' + str(address[0]))
    channel.sendText(`CLIENT: ${host}`);
    // msg = "\n(Connected: ...)"; for output in self.outputs: send(output, msg)
    const joined = `(Connected: New client (${this.clients}) from ${name})`;
    const told = this.#broadcast([`\n${joined}`]);
    // self.clientmap[client] = (address, cname); self.outputs.append(client)
    this.clientmap.set(channel, name);
    this.trace?.(
      this.#read(channel, frames, bytes) +
        ` -> named ${name} (${channel.wire} frames), CLIENT: sent, ` +
        `join notice to ${plural(told, "client")}`,
    );
    return frames.slice(1);
  }

  /** How a trace line names a client event; only built when tracing. */
  #read(channel: Channel, frames: string[], bytes: number): string {
    const count = plural(frames.length, "frame");
    return `readable: connection ${channel.id} -> ${count} (${bytes} bytes), ` +
      `first ${previewText(frames[0])}`;
  }

  /** The trace line for a connection that ended. */
  #traceHangUp(
    channel: Channel,
    name: string | undefined,
    why: string | undefined,
    told: number,
  ): void {
    if (!this.trace) return;
    let notice = "never named";
    if (name) notice = `hang-up notice to ${plural(told, "client")}`;
    const end = why ?? "end of stream";
    this.trace(
      `readable: connection ${channel.id} -> ${end}, closed, ${notice}`,
    );
  }

  /**
   * The book's `for output in self.outputs: send(output, msg)`: sends
   * `texts` to every named client but `except`, in one buffer each; returns
   * how many it sent them to. The server encodes every frame itself, once per
   * wire, in each receiver's own wire: what a client sent is never passed on
   * as its bytes, so a book client can never be handed another's pickle.
   */
  #broadcast(texts: string[], except?: Channel): number {
    const frames: Partial<Record<Wire, Uint8Array>> = {};
    let receivers = 0;
    for (const [output, name] of this.clientmap) {
      if (!name || output === except) continue;
      const wire = output.wire!; // known: it sent its NAME
      let bytes = frames[wire];
      if (bytes === undefined) {
        bytes = encodeFrames(texts, wire); // once per wire, not per receiver
        frames[wire] = bytes;
      }
      output.send(bytes);
      receivers += 1;
    }
    return receivers;
  }
}

/** The book's ChatClient: stdin and the socket, waited on at once. */
// book: class ChatClient(object):
export class ChatClient {
  constructor(
    readonly channel: Channel,
    readonly prompt: string,
    readonly trace?: Trace, // as the server's: one line per event
  ) {}

  /**
   * The book's `__init__`: connect, send the name, learn our address. A
   * static async method, since a constructor cannot `await`. Resolves with
   * undefined when a signal came first (the client has then said
   * " Client interrupted. "); exits 1 when it cannot connect.
   */
  // book: def __init__(self, name, port, host=SERVER_HOST):
  static async connect(
    name: string,
    port: number,
    wire: Wire = "json",
    trace?: Trace,
    interrupted: Promise<Deno.Signal> = new Promise(() => {}),
  ): Promise<ChatClient | undefined> {
    // book: self.name = name
    // book: self.connected = False
    // book: self.host = host
    // book: self.port = port
    // book: self.prompt='[' + '@'.join((name, socket.gethostname().split('.')[0])) + ']> '
    // These are the arguments here, and the ChatClient made below: made
    // connected, with the prompt the server's reply gives (the book's first
    // prompt, with the host name, was never shown).
    let channel: Channel | undefined;
    // book: try:
    try {
      // book: self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      // book: self.sock.connect((host, self.port))
      const connected = await beforeSignal(
        Deno.connect({ hostname: SERVER_HOST, port }),
        interrupted,
      );
      if ("signal" in connected) {
        return interruptedEarly(connected.signal, trace);
      }
      // book: print ("Now connected to chat server@ port %d" % self.port)
      console.log(`Now connected to chat server@ port ${port}`);
      // book: self.connected = True
      channel = new Channel(connected.value, 0, wire);
      // A text relayed from a book-wire client may grow six times in our
      // JSON frame (each control character becomes \u00XX), plus a name.
      channel.maxFrame = 7 * MAX_FRAME_BYTES;
      // book: send(self.sock,'NAME: ' + self.name)
      channel.sendText(NAME_PREFIX + name);
      trace?.(`connected, NAME sent in ${wire} frames`);
      // book: data = receive(self.sock)
      // firstReply() waits for it at most 10 s, and gives way to a signal.
      const reply = await firstReply(channel, interrupted);
      if ("signal" in reply) {
        channel.close();
        return interruptedEarly(reply.signal, trace);
      }
      // book: addr = data.split('CLIENT: ')[1]
      if (!reply.value.startsWith("CLIENT: ")) {
        throw new HandshakeError(
          `the server's first reply is not CLIENT: ${previewText(reply.value)}`,
        );
      }
      const addr = reply.value.slice("CLIENT: ".length);
      trace?.(`readable: the socket -> CLIENT: ${previewText(addr)}`);
      // book: self.prompt = '[' + '@'.join((self.name, addr)) + ']> '
      return new ChatClient(channel, `[${name}@${addr}]> `, trace);
    } catch (error) {
      // book: except socket.error as e:
      channel?.close();
      if (error instanceof Deno.errors.NotCapable) {
        permissionError("connect to", port, [`--name=${name}`], wire, trace);
      }
      // book: print ("Failed to connect to chat server @ port %d" % self.port)
      console.log(`Failed to connect to chat server @ port ${port}`);
      if (error instanceof HandshakeError) {
        console.error(`Error: ${error.message}`);
      }
      // book: sys.exit(1)
      Deno.exit(1);
    }
  }

  /** The book's client loop; returns when the client is done. */
  // book: def run(self):
  async run(...inputs: AsyncIterable<Event>[]): Promise<void> {
    // book: while self.connected:
    // book: try:
    // book: sys.stdout.write(self.prompt)
    // book: sys.stdout.flush()
    // The prompt has no newline, so not console.log (which adds one):
    // `Deno.stdout.writeSync` writes the bytes to standard output at once.
    // It is written again after each event, at the end of the loop's body.
    const prompt = encoder.encode(this.prompt);
    Deno.stdout.writeSync(prompt);
    // book: readable, writeable,exceptional = select.select([0, self.sock], [],[])
    const ready = select(this.channel.events(), ...inputs);
    // book: for sock in readable:
    for await (const event of ready) {
      // book: if sock == 0:
      if (event.source === "stdin") {
        // book: data = sys.stdin.readline().strip()
        if (event.line === null) {
          // The end of stdin (Ctrl-D, or the end of a pipe): what was typed
          // is queued already; send it, then leave. The book went on
          // reading the socket while nothing typed could be sent any more.
          this.trace?.("readable: sys.stdin -> its end, leaving");
          console.log(" Client leaving: end of input. ");
          await this.leave();
          return;
        }
        const data = event.line.trim();
        // book: if data: send(self.sock, data)
        this.#sendLine(data, event.unterminated);
        // book: elif sock == self.sock:
      } else if (event.source === "client") {
        // book: data = receive(self.sock)
        // Channel.events() read it: the frames one read made whole, or null.
        // book: if not data:
        if (event.data === null) {
          const why = this.channel.dropReason ?? "end of stream";
          this.trace?.(`readable: the socket -> ${why}, shutting down`);
          // book: print ('Client shutting down.')
          console.log("Client shutting down.");
          // book: self.connected = False
          // book: break
          break;
          // book: else:
        } else {
          this.trace?.(
            `readable: the socket -> ${plural(event.data.length, "frame")} ` +
              `(${event.bytes} bytes), first ${previewText(event.data[0])} ` +
              "-> printed",
          );
          // book: sys.stdout.write(data + '\n')
          // book: sys.stdout.flush()
          console.log(event.data.join(`\n${this.prompt}`)); // a prompt each
        }
      } else if (event.source === "signal") {
        // book: except KeyboardInterrupt:
        this.trace?.(`signal: ${event.signal} -> interrupted`);
        // book: print (" Client interrupted. """)
        console.log(" Client interrupted. ");
        // book: self.sock.close()
        this.channel.close();
        // book: break
        break;
      }
      Deno.stdout.writeSync(prompt);
    }
    this.channel.close();
  }

  /**
   * The book's `if data: send(self.sock, data)`, with a bound: a line too
   * long for one frame is refused with a line on stdout, and not sent.
   * `unterminated`: the line had no newline (text typed, then Ctrl-D), so the
   * terminal's cursor is still after it, and what comes next starts a line
   * of its own.
   */
  #sendLine(line: string, unterminated = false): void {
    const wire = this.channel.wire!;
    const bytes = encodeFrame(line, wire);
    const tooLong = bytes.length > HEADER_BYTES[wire] + MAX_FRAME_BYTES;
    let outcome: string;
    if (tooLong) {
      outcome = "too long, not sent";
    } else if (line) {
      outcome = `sent as a ${bytes.length}-byte frame`;
    } else {
      outcome = "empty, nothing sent";
    }
    this.trace?.(
      `readable: sys.stdin -> a line ${previewText(line)} -> ${outcome}`,
    );
    if (tooLong) {
      console.log(`(not sent: over ${MAX_FRAME_BYTES} bytes)`);
    } else if (line) {
      this.channel.send(bytes);
    }
    if (unterminated && Deno.stdin.isTerminal()) console.log();
  }

  /**
   * Not in the book (it could not leave at the end of stdin): sends what is
   * queued, for at most LEAVE_FLUSH_MS, then closes. `delay()` with an
   * AbortSignal is a timer that can be cancelled: once the queue is drained,
   * `abort()` clears it (its promise rejects, which `.catch` ignores), so no
   * timer is left to keep the process waiting.
   */
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

/**
 * The book's main block; `import.meta.main` at the end of the file calls it
 * when this file is the script run, not when a test imports it.
 */
// book: if __name__ == "__main__":
async function main(): Promise<void> {
  // book: parser = argparse.ArgumentParser(description='Socket Server Example with Select')
  // book: parser.add_argument('--name', action="store", dest="name", required=True)
  // book: parser.add_argument('--port', action="store", dest="port", type=int, required=True)
  // book: given_args = parser.parse_args()
  // book: port = given_args.port
  // book: name = given_args.name
  const { name, port, wire, trace } = parseCommandLine(Deno.args);
  // Signal listeners first: a Ctrl-C right after the ready line is ours.
  const signals = interrupts();
  // book: if name == CHAT_SERVER_NAME:
  if (name === CHAT_SERVER_NAME) {
    // book: server = ChatServer(port)
    // book: server.run()
    await new ChatServer(port, trace).run(stdinLines("server"), signals);
  } else {
    // book: else:
    // book: client = ChatClient(name=name, port=port)
    const client = await ChatClient.connect(
      name,
      port,
      wire,
      trace,
      signals.signalled,
    );
    // book: client.run()
    await client?.run(stdinLines("client"), signals);
  }
  // A terminal's Ctrl-C reaches `deno task` and this script at once, and
  // `deno task` then forwards it to the script: a second SIGINT comes a
  // moment after the first. While the listeners are in place it does
  // nothing (the shutdown is done), but one that comes while the process is
  // ending finds none and kills it with 130. So wait SIGNAL_GRACE_MS for it,
  // then exit at once.
  await delay(SIGNAL_GRACE_MS);
  // Deno exits by itself only once nothing is pending (signal listeners do
  // not count). A `Deno.stdin.read()` is still pending here: it cannot be
  // cancelled, and a terminal's stdin never ends, so without an explicit exit
  // the process would wait for a line nobody reads. The book's script simply
  // returned from its main block.
  Deno.exit(0);
}

// --- Not in the book: the frames of both wires ---
// The book speaks only its own frame. The server learns each connection's
// from the byte after the first 4 of its first frame (`detectWire`), and
// writes each receiver's frames in that receiver's own wire.

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The three frames a connection may speak, told apart by the byte after the
 * first 4 of its first frame (see `detectWire`):
 * - "json": this project's frame, a 4-byte big-endian length, then UTF-8 JSON
 *   (an array of one string);
 * - "book8": the book's frame on 64-bit Linux and macOS, where
 *   `struct.pack("L", socket.htonl(n))` makes 8 bytes: the big-endian length,
 *   then 4 zero bytes; then `pickle.dumps(args)`;
 * - "book4": the book's frame on Windows, where "L" is 4 bytes: the
 *   big-endian length, then the pickle.
 */
export type Wire = "json" | "book8" | "book4";
const HEADER_BYTES: Record<Wire, number> = { json: 4, book8: 8, book4: 4 };

/** Frames for each of `texts`, one after another in one buffer. */
function encodeFrames(texts: string[], wire: Wire): Uint8Array {
  const frames = texts.map((text) => encodeFrame(text, wire));
  return concat(frames);
}

/**
 * The wire of a connection's first frame, from the byte after its first 4
 * (undefined until 5 bytes have come): 0x00 is the rest of the book's 8-byte
 * header, 0x80 a pickle's PROTO right after the book's 4-byte header, "[" the
 * start of our JSON. Anything else is neither.
 */
export function detectWire(bytes: Uint8Array): Wire | undefined {
  if (bytes.length < 5) return undefined;
  if (bytes[4] === 0x00) return "book8";
  if (bytes[4] === 0x80) return "book4";
  if (bytes[4] === 0x5b) return "json"; // "["
  throw new Error(
    `a first frame of no known wire (byte 4 is ${byteHex(bytes[4])})`,
  );
}

/** A byte as an error names it: 0x63. */
function byteHex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, "0")}`;
}

/**
 * The length in a frame's first 4 bytes, big-endian in every wire (the
 * book's `socket.ntohl`), or undefined before 4 bytes have come. Throws when
 * it is over `maxFrame`: that needs no more bytes to know.
 */
export function frameLength(
  bytes: Uint8Array,
  maxFrame: number,
): number | undefined {
  if (bytes.length < 4) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, 4);
  const length = view.getUint32(0);
  if (length > maxFrame) {
    throw new Error(`a ${length}-byte frame, over ${maxFrame}`);
  }
  return length;
}

/** The book's `pickle.loads(buf)[0]`, for JSON: the one text of the array. */
function parseJson(body: Uint8Array): string {
  try {
    const args = JSON.parse(decoder.decode(body));
    if (Array.isArray(args) && typeof args[0] === "string") return args[0];
  } catch {
    // not UTF-8 JSON: the same error as JSON of the wrong shape
  }
  throw new Error("a frame that is not a JSON array of text");
}

/** `pickle.loads(buf)[0]`, for the book's frames, by the strict decoder. */
function parsePickle(body: Uint8Array): string {
  try {
    return decodeBookPickle(body);
  } catch (error) {
    throw new Error(
      `a book frame that is not a pickled text: ${(error as Error).message}`,
    );
  }
}

// --- Not in the book: the strict pickle codec ---
// The book's chat frame body: a strict reader and an exact writer for
// `pickle.dumps((text,))`.
//
// The book's 2_3 chat server and client send every message as
// `pickle.dumps(args)`, where `args` is a tuple holding one `str`, and read it
// back with `pickle.loads(...)[0]`. `pickle.loads` is not a parser: it runs a
// small stack machine whose opcodes can import any module and call any function
// (GLOBAL or STACK_GLOBAL names `os.system`, REDUCE calls it). Any client of
// the book's server can therefore run commands on it and on every other client.
//
// This port never unpickles. `decodeBookPickle` accepts one byte grammar,
// exactly the bytes Python 3 writes for a 1-tuple of one `str` with protocols 2
// to 5, and throws a `BookPickleError` for anything else, naming the first byte
// that does not fit. It keeps no memo, builds no objects, and looks nothing up:
// the only thing it ever produces is a string.
//
// The grammar, one opcode per line (`[...]` is optional):
//
//   PROTO n                      0x80 n, with n from 2 to 5
//   [FRAME length]               0x95 + 8-byte length; protocols 4 and 5 only
//   SHORT_BINUNICODE | BINUNICODE | BINUNICODE8    the text, as UTF-8
//   [FRAME length]               only if no FRAME came before (see below)
//   [MEMOIZE | BINPUT i | LONG_BINPUT i]
//   TUPLE1                       0x85
//   [MEMOIZE | BINPUT i | LONG_BINPUT i]
//   STOP                         0x2e "."
//
// What Python 3.8+ writes with each protocol (checked with `python3 -c 'import
// pickle, pickletools; pickletools.dis(pickle.dumps(("hi",), protocol=N))'`):
//
//   protocols 2 and 3:  PROTO, BINUNICODE, BINPUT 0, TUPLE1, BINPUT 1, STOP
//   protocols 4 and 5:  PROTO, FRAME,
//                       SHORT_BINUNICODE (text under 256 bytes) or BINUNICODE,
//                       MEMOIZE, TUPLE1, MEMOIZE, STOP
//   protocols 4 and 5, text of 64 KiB (65,536 bytes) or more:
//                       PROTO, BINUNICODE, FRAME 4,
//                       MEMOIZE, TUPLE1, MEMOIZE, STOP
//
// The last form is why FRAME may come after the text: since Python 3.7 the
// pickler writes a large string outside any frame (so it is not copied into the
// frame buffer) and opens a new frame for the four bytes that follow.
// BINUNICODE8 is what protocols 4 and 5 use for text over 4 GiB; the reader
// accepts it, and its length, like every length, is checked against the bytes
// that are really there before anything is read or allocated.

// The opcodes of the grammar, by their names in Python's `pickletools`.
const PROTO = 0x80;
const FRAME = 0x95;
const SHORT_BINUNICODE = 0x8c;
const BINUNICODE = 0x58; // "X"
const BINUNICODE8 = 0x8d;
const MEMOIZE = 0x94;
const BINPUT = 0x71; // "q"
const LONG_BINPUT = 0x72; // "r"
const TUPLE1 = 0x85;
const STOP = 0x2e; // "."

// The protocols whose pickles this reader accepts. Protocols 0 and 1 (Python
// 2's defaults) do not start with PROTO and build the tuple with MARK ...
// TUPLE; Python 3 never writes them by default, so they are refused rather than
// given a second grammar.
const LOWEST_PROTOCOL = 2;
const HIGHEST_PROTOCOL = 5;
// FRAME exists from protocol 4 on.
const FIRST_FRAMED_PROTOCOL = 4;
// The protocol `encodeBookPickle` writes: Python 3.8+'s
// `pickle.DEFAULT_PROTOCOL`.
const DEFAULT_PROTOCOL = 4;
// Python writes a string of this many UTF-8 bytes or more outside any frame
// (`_FRAME_SIZE_TARGET` in Lib/pickle.py, `FRAME_SIZE_TARGET` in
// Modules/_pickle.c).
const FRAME_SIZE_TARGET = 64 * 1024;

// Every opcode pickle has, so that an error names what it found (`GLOBAL`,
// `REDUCE`, ...) instead of only a number. Only the ten grammar opcodes above
// are ever accepted.
const OPCODE_NAMES: ReadonlyMap<number, string> = new Map([
  [0x28, "MARK"],
  [0x2e, "STOP"],
  [0x30, "POP"],
  [0x31, "POP_MARK"],
  [0x32, "DUP"],
  [0x46, "FLOAT"],
  [0x49, "INT"],
  [0x4a, "BININT"],
  [0x4b, "BININT1"],
  [0x4c, "LONG"],
  [0x4d, "BININT2"],
  [0x4e, "NONE"],
  [0x50, "PERSID"],
  [0x51, "BINPERSID"],
  [0x52, "REDUCE"],
  [0x53, "STRING"],
  [0x54, "BINSTRING"],
  [0x55, "SHORT_BINSTRING"],
  [0x56, "UNICODE"],
  [0x58, "BINUNICODE"],
  [0x61, "APPEND"],
  [0x62, "BUILD"],
  [0x63, "GLOBAL"],
  [0x64, "DICT"],
  [0x7d, "EMPTY_DICT"],
  [0x65, "APPENDS"],
  [0x67, "GET"],
  [0x68, "BINGET"],
  [0x69, "INST"],
  [0x6a, "LONG_BINGET"],
  [0x6c, "LIST"],
  [0x5d, "EMPTY_LIST"],
  [0x6f, "OBJ"],
  [0x70, "PUT"],
  [0x71, "BINPUT"],
  [0x72, "LONG_BINPUT"],
  [0x73, "SETITEM"],
  [0x74, "TUPLE"],
  [0x29, "EMPTY_TUPLE"],
  [0x75, "SETITEMS"],
  [0x47, "BINFLOAT"],
  [0x80, "PROTO"],
  [0x81, "NEWOBJ"],
  [0x82, "EXT1"],
  [0x83, "EXT2"],
  [0x84, "EXT4"],
  [0x85, "TUPLE1"],
  [0x86, "TUPLE2"],
  [0x87, "TUPLE3"],
  [0x88, "NEWTRUE"],
  [0x89, "NEWFALSE"],
  [0x8a, "LONG1"],
  [0x8b, "LONG4"],
  [0x42, "BINBYTES"],
  [0x43, "SHORT_BINBYTES"],
  [0x8c, "SHORT_BINUNICODE"],
  [0x8d, "BINUNICODE8"],
  [0x8e, "BINBYTES8"],
  [0x8f, "EMPTY_SET"],
  [0x90, "ADDITEMS"],
  [0x91, "FROZENSET"],
  [0x92, "NEWOBJ_EX"],
  [0x93, "STACK_GLOBAL"],
  [0x94, "MEMOIZE"],
  [0x95, "FRAME"],
  [0x96, "BYTEARRAY8"],
  [0x97, "NEXT_BUFFER"],
  [0x98, "READONLY_BUFFER"],
]);

/** The error for a payload that is not a pickled 1-tuple of one str. */
export class BookPickleError extends Error {
  override name = "BookPickleError";
}

// "0x63 (GLOBAL)": how an error names an opcode byte.
function describeOpcode(opcode: number): string {
  const name = OPCODE_NAMES.get(opcode) ?? "not a pickle opcode";
  return `${byteHex(opcode)} (${name})`;
}

// The reader keeps one position in the payload and moves it forward only. Each
// method reads one piece of the grammar or throws; none of them reads past the
// end of the payload.
class StrictPickleReader {
  #payload: Uint8Array;
  #view: DataView;
  #position = 0;
  #protocol = 0;
  #frameSeen = false;
  // How many values the pickle has stored in its memo so far (see MEMOIZE).
  #memoEntries = 0;
  // `fatal: true` makes decoding throw on bytes that are not UTF-8, instead of
  // replacing them with U+FFFD: a frame with broken text is a bad frame, not a
  // message to relay.
  #utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

  constructor(payload: Uint8Array) {
    this.#payload = payload;
    // A DataView reads multi-byte little-endian numbers at any offset. It must
    // use the payload's own offset: the payload may be a view into a larger
    // buffer (a frame cut out of what a socket read).
    const { buffer, byteOffset, byteLength } = payload;
    this.#view = new DataView(buffer, byteOffset, byteLength);
  }

  // How many bytes are left after the current position.
  #remaining(): number {
    return this.#payload.length - this.#position;
  }

  // The opcode at the current position, or undefined at the end of the payload.
  #peek(): number | undefined {
    return this.#payload[this.#position];
  }

  // The error for the byte at the current position, which is not one of
  // `expected`.
  #refuse(expected: string): never {
    const opcode = this.#peek();
    const at = this.#position;
    if (opcode === undefined) {
      throw new BookPickleError(
        `pickle ends at byte ${at}: expected ${expected}`,
      );
    }
    throw new BookPickleError(
      `pickle opcode ${describeOpcode(opcode)} at byte ${at} is not allowed: ` +
        `only a 1-tuple of one str (expected ${expected})`,
    );
  }

  // Reads an opcode's fixed-size argument (a length or a memo index),
  // little-endian as pickle writes all of them. An 8-byte argument is returned
  // as a bigint, since it may not fit a number.
  #readArgument(name: string, opcodeAt: number, size: 1 | 4 | 8) {
    if (this.#remaining() < size) {
      const end = this.#payload.length;
      throw new BookPickleError(
        `pickle ends at byte ${end} inside the ${size}-byte argument ` +
          `of ${name} at byte ${opcodeAt}`,
      );
    }
    const at = this.#position;
    this.#position += size;
    if (size === 1) return this.#view.getUint8(at);
    if (size === 4) return this.#view.getUint32(at, true);
    return this.#view.getBigUint64(at, true);
  }

  // PROTO n: the first two bytes of every pickle of protocol 2 or higher.
  readProtocol(): void {
    if (this.#peek() !== PROTO) {
      this.#refuse(
        `PROTO (0x80); protocol 0 and 1 pickles have no PROTO and are refused`,
      );
    }
    this.#position += 1;
    const protocol = Number(this.#readArgument("PROTO", 0, 1));
    if (protocol < LOWEST_PROTOCOL || protocol > HIGHEST_PROTOCOL) {
      throw new BookPickleError(
        `pickle protocol ${protocol} (PROTO at byte 0) is not allowed: ` +
          `only protocols ${LOWEST_PROTOCOL} to ${HIGHEST_PROTOCOL}`,
      );
    }
    this.#protocol = protocol;
  }

  // FRAME length: protocols 4 and 5 group opcodes into frames so that an
  // unpickler can read a whole frame with one call. The frame says nothing
  // about the value, so the reader skips it, but only where Python puts one: at
  // most one frame, running exactly to the end of the payload.
  skipFrameIfPresent(): void {
    if (this.#peek() !== FRAME) return;
    const frameAt = this.#position;
    if (this.#protocol < FIRST_FRAMED_PROTOCOL) {
      throw new BookPickleError(
        `pickle FRAME at byte ${frameAt} is not allowed in protocol ` +
          `${this.#protocol}: frames exist from protocol 4 on`,
      );
    }
    if (this.#frameSeen) {
      // The first frame runs to the end of the payload, so a second one would
      // begin inside it.
      throw new BookPickleError(
        `pickle FRAME at byte ${frameAt} is not allowed: ` +
          `it begins inside the frame before it`,
      );
    }
    this.#position += 1;
    const declared = BigInt(this.#readArgument("FRAME", frameAt, 8));
    const remaining = this.#remaining();
    if (declared !== BigInt(remaining)) {
      throw new BookPickleError(
        `pickle FRAME at byte ${frameAt} declares ${declared} bytes but ` +
          `${remaining} bytes follow: it must run exactly to the end`,
      );
    }
    this.#frameSeen = true;
  }

  // SHORT_BINUNICODE / BINUNICODE / BINUNICODE8: a length (1, 4 or 8 bytes) and
  // that many bytes of UTF-8. The length is checked against what is left before
  // a single byte is decoded, so a lying length costs nothing.
  readText(): string {
    const opcodeAt = this.#position;
    const opcode = this.#peek();
    let lengthSize: 1 | 4 | 8;
    if (opcode === SHORT_BINUNICODE) lengthSize = 1;
    else if (opcode === BINUNICODE) lengthSize = 4;
    else if (opcode === BINUNICODE8) lengthSize = 8;
    else {
      return this.#refuse(
        "SHORT_BINUNICODE (0x8c), BINUNICODE (0x58) or BINUNICODE8 (0x8d)",
      );
    }
    const name = OPCODE_NAMES.get(opcode)!;
    this.#position += 1;
    const declared = this.#readArgument(name, opcodeAt, lengthSize);
    const remaining = this.#remaining();
    if (BigInt(declared) > BigInt(remaining)) {
      throw new BookPickleError(
        `pickle ${name} at byte ${opcodeAt} declares ${declared} bytes ` +
          `of text but only ${remaining} bytes follow`,
      );
    }
    const length = Number(declared);
    // `subarray` is a view into the payload, not a copy: the only allocation is
    // the string.
    const start = this.#position;
    const bytes = this.#payload.subarray(start, start + length);
    let text: string;
    try {
      text = this.#utf8.decode(bytes);
    } catch {
      throw new BookPickleError(
        `pickle ${name} at byte ${opcodeAt} holds ${length} bytes ` +
          `that are not valid UTF-8`,
      );
    }
    this.#position += length;
    return text;
  }

  // MEMOIZE / BINPUT i / LONG_BINPUT i: "remember the value on top of the
  // stack as memo entry i", so that a later BINGET can refer to it. Python
  // writes one after each value it builds: entry 0 is the str, entry 1 the
  // tuple (MEMOIZE takes the next number itself). This reader keeps no memo and
  // refuses every opcode that reads one, but it checks that an explicit index
  // is that next number: a pickler never writes another, and Python's own
  // unpickler would grow its memo to a huge index before failing. Anything
  // that is not a memo opcode is left where it is, for the next step to judge.
  skipMemoIfPresent(): void {
    const opcodeAt = this.#position;
    const opcode = this.#peek();
    let index: number;
    if (opcode === MEMOIZE) {
      this.#position += 1;
      index = this.#memoEntries;
    } else if (opcode === BINPUT) {
      this.#position += 1;
      index = Number(this.#readArgument("BINPUT", opcodeAt, 1));
    } else if (opcode === LONG_BINPUT) {
      this.#position += 1;
      index = Number(this.#readArgument("LONG_BINPUT", opcodeAt, 4));
    } else {
      return;
    }
    if (index !== this.#memoEntries) {
      throw new BookPickleError(
        `pickle ${OPCODE_NAMES.get(opcode)} at byte ${opcodeAt} stores memo ` +
          `entry ${index}: Python writes entry ${this.#memoEntries} here`,
      );
    }
    this.#memoEntries += 1;
  }

  // One exact opcode with no argument (TUPLE1, STOP).
  expectOpcode(opcode: number, expected: string): void {
    if (this.#peek() !== opcode) this.#refuse(expected);
    this.#position += 1;
  }

  // STOP ends the pickle; anything after it would be a second message smuggled
  // into one frame.
  expectEnd(): void {
    const after = this.#remaining();
    if (after !== 0) {
      throw new BookPickleError(
        `pickle has ${after} bytes after STOP at byte ${this.#position - 1}: ` +
          `nothing may follow`,
      );
    }
  }
}

/**
 * Reads the text out of a book frame's body, `pickle.dumps((text,))` for
 * protocols 2 to 5, and throws a `BookPickleError` for any other bytes. Nothing
 * in the payload is ever run or looked up.
 */
export function decodeBookPickle(payload: Uint8Array): string {
  const reader = new StrictPickleReader(payload);
  reader.readProtocol();
  // Protocols 4 and 5 frame everything after PROTO ...
  reader.skipFrameIfPresent();
  // The book's pickle.loads(...)[0]: the str the tuple holds.
  const text = reader.readText();
  // ... or, after a text of 64 KiB or more, everything after the text.
  reader.skipFrameIfPresent();
  reader.skipMemoIfPresent();
  reader.expectOpcode(TUPLE1, "MEMOIZE, BINPUT, LONG_BINPUT or TUPLE1 (0x85)");
  reader.skipMemoIfPresent();
  reader.expectOpcode(STOP, "MEMOIZE, BINPUT, LONG_BINPUT or STOP (0x2e)");
  reader.expectEnd();
  return text;
}

/**
 * Writes `text` as a book frame's body: exactly the bytes Python 3.8+ writes
 * for `pickle.dumps((text,))` with its default protocol, 4. A lone surrogate in
 * `text` (JSON can carry one, as "\ud800"; UTF-8 cannot) is written as U+FFFD,
 * as Deno's TextEncoder writes it everywhere.
 */
export function encodeBookPickle(text: string): Uint8Array {
  const utf8 = new TextEncoder().encode(text);
  const n = utf8.length;
  // After the text, Python writes MEMOIZE (remember the str), TUPLE1 (make the
  // 1-tuple), MEMOIZE (remember the tuple), STOP.
  const tail = [MEMOIZE, TUPLE1, MEMOIZE, STOP];

  // The text's opcode: SHORT_BINUNICODE with a 1-byte length below 256 bytes,
  // else BINUNICODE with a 4-byte length. (BINUNICODE8 is for text over 4 GiB,
  // which no JavaScript string reaches: V8 limits a string to about 2^29 UTF-16
  // units, at most 1.5 GiB of UTF-8.)
  const textHeader = n < 256
    ? [SHORT_BINUNICODE, n]
    : [BINUNICODE, ...littleEndian(n, 4)];

  const parts: (number[] | Uint8Array)[] = [[PROTO, DEFAULT_PROTOCOL]];
  if (n < FRAME_SIZE_TARGET) {
    // One frame holding everything after PROTO.
    const frameLength = textHeader.length + n + tail.length;
    parts.push(
      [FRAME, ...littleEndian(frameLength, 8)],
      textHeader,
      utf8,
      tail,
    );
  } else {
    // A large text goes outside any frame; a new frame holds the four bytes
    // after it.
    parts.push(
      textHeader,
      utf8,
      [FRAME, ...littleEndian(tail.length, 8)],
      tail,
    );
  }

  // One buffer: the parts, one after the other. (std's concat() takes only
  // Uint8Arrays, and most parts here are short arrays of numbers.)
  let size = 0;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// `value` as `size` little-endian bytes (pickle writes every length this way).
// Division rather than bit shifts, because JavaScript's shifts work on 32 bits
// and a FRAME length has 64.
function littleEndian(value: number, size: 4 | 8): number[] {
  const bytes: number[] = [];
  for (let i = 0; i < size; i++) {
    bytes.push(value % 256);
    value = Math.floor(value / 256);
  }
  return bytes;
}

// --- Not in the book: the channel (a connection's reads and writes) ---

/**
 * A connection: the book's `receive()` and `send()`, for whole frames of
 * its wire. It reads into a 1 KiB buffer while idle, since a pending
 * `conn.read(buffer)` holds that buffer for as long as the peer is silent;
 * a frame longer than that gets a buffer of its size, which is given back
 * once every frame in it is taken.
 */
export class Channel {
  dropReason?: string; // why it was closed; undefined while open
  maxFrame = MAX_FRAME_BYTES;
  #idle = new Uint8Array(IDLE_READ_BYTES);
  #buffer = this.#idle; // holds the bytes read but not yet taken ...
  #start = 0; // ... from here
  #end = 0; // to here
  #queue: Uint8Array[] = [];
  #queued = 0; // bytes queued or being written: a writer runs while > 0
  #writer?: Promise<void>; // the writer running now, if any
  #deadline?: ReturnType<typeof setTimeout>;
  #takenBytes = 0; // the size of the frames taken since #taken() last asked

  /** `wire`: the frames it speaks, or undefined to learn from the first one. */
  constructor(
    readonly conn: Deno.TcpConn,
    readonly id = 0,
    public wire?: Wire,
  ) {
    // Not in the book: Nagle's algorithm off. With it on, the kernel may hold
    // a small write back until the last one is acknowledged, which is what
    // delayed the book's second send(). TCP_NODELAY is a setting of each
    // connected socket, and `Deno.listen()` takes no option that would set it
    // on the sockets it accepts, so `setNoDelay(true)` is called on each
    // `Deno.TcpConn` here, as it is made: every accepted connection, and the
    // client's own. A frame is then one write that goes out at once.
    conn.setNoDelay(true);
  }

  /**
   * The book's receive(): the next whole frame's text; null at the end.
   * The book read a header's worth and then the body with `recv()`, and lost
   * data when TCP cut a frame; this reads until a whole frame is here.
   */
  async receive(): Promise<string | null> {
    while (true) {
      const text = this.#take();
      if (text !== undefined) return text;
      // `conn.read(view)` is the book's `recv()`: it resolves once some bytes
      // have come (at least one, at most the view's length) with how many it
      // wrote into the view, or with null at the end of the stream. Until then
      // the read is pending, and it holds the view, and so the whole buffer
      // under it, for as long as the peer sends nothing: that is why an idle
      // connection reads into the small #idle buffer.
      const n = await this.conn.read(this.#buffer.subarray(this.#end));
      if (n === null) {
        const buffered = this.#end - this.#start;
        if (buffered === 0) return null; // the end, between frames
        throw new Error(HUNG_UP_MID_FRAME);
      }
      this.#end += n;
    }
  }

  /** A whole frame from the buffer, or undefined after making room for one. */
  #take(): string | undefined {
    const bytes = this.#buffer.subarray(this.#start, this.#end);
    if (this.wire === undefined) {
      // Not in the book: the wire detection. Before the wire is known, a
      // length over maxFrame is refused as soon as its 4 bytes are here
      // (frameLength throws), so a bad first frame is not waited for.
      frameLength(bytes, this.maxFrame);
      this.wire = detectWire(bytes);
    }
    let taken: Taken;
    if (this.wire === undefined) {
      taken = { text: undefined, need: 5 }; // detectWire needs byte 4
    } else {
      taken = takeFrame(bytes, this.wire, this.maxFrame);
    }
    if (taken.text === undefined) {
      this.#makeRoom(taken.need);
      return undefined;
    }
    this.#start += taken.size;
    this.#takenBytes += taken.size;
    if (this.#start === this.#end) {
      // Every byte read is taken: start over, in the small buffer.
      this.#start = 0;
      this.#end = 0;
      this.#buffer = this.#idle;
    }
    return taken.text;
  }

  /** Room after the buffered bytes for a frame of `need` bytes in all. */
  #makeRoom(need: number): void {
    if (this.#start + need <= this.#buffer.length) return; // it fits already
    const buffered = this.#buffer.subarray(this.#start, this.#end);
    if (need > this.#buffer.length) {
      const grown = new Uint8Array(need); // a long frame's own buffer
      grown.set(buffered);
      this.#buffer = grown;
    } else {
      this.#buffer.copyWithin(0, this.#start, this.#end); // to the front
    }
    this.#end -= this.#start;
    this.#start = 0;
  }

  /** How many bytes of frames were taken since it was last asked. */
  #taken(): number {
    const bytes = this.#takenBytes;
    this.#takenBytes = 0;
    return bytes;
  }

  /** The frames already whole in the buffer, taken without a read. */
  takeBuffered(): string[] {
    const texts: string[] = [];
    while (true) {
      const text = this.#take();
      if (text === undefined) break;
      texts.push(text);
    }
    return texts;
  }

  /**
   * One event per read that completed a frame: the frames it made whole, in
   * order (what one round of `select` let the book's loop read), then one
   * event with null at the end; never throws. One event per read, not per
   * frame, lets the server relay a burst in one write per receiver, which
   * the benchmark shows matters: a write per frame halved the deliveries/s.
   */
  async *events(): AsyncGenerator<Event> {
    // An error (a bad frame, a hang-up mid-frame, a read interrupted by
    // close()) ends the loop the same way as the end of the stream: caught
    // here, it becomes the one `data: null` event, since an input that threw
    // would make MuxAsyncIterator throw out of the server's loop.
    try {
      while (true) {
        const first = await this.receive();
        if (first === null) break;
        const data = [first, ...this.takeBuffered()];
        yield { source: "client", channel: this, data, bytes: this.#taken() };
      }
    } catch (error) {
      this.close((error as Error).message); // unless closed already
    }
    yield { source: "client", channel: this, data: null, bytes: 0 };
  }

  /** The book's send(): one text, in this connection's wire. */
  sendText(text: string): void {
    this.send(encodeFrame(text, this.wire ?? "json"));
  }

  /**
   * The book's channel.send(): queues a frame (see #flush for the writer);
   * past MAX_QUEUE_BYTES waiting, the peer is dropped.
   */
  send(bytes: Uint8Array): void {
    if (this.dropReason !== undefined) return;
    const writerRunning = this.#queued > 0; // it takes what is queued next
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    if (this.#queued > MAX_QUEUE_BYTES) {
      this.close("stopped reading: over 1 MiB queued");
    } else if (!writerRunning) {
      this.#writer = this.#flush();
    }
  }

  /** Resolves once everything queued so far is written (or the write failed). */
  async drained(): Promise<void> {
    await this.#writer;
  }

  /**
   * Not in the book: the name deadline (the book waited for a name forever,
   * and the whole server with it). Closes it with `reason` unless
   * `clearDeadline()` comes first. `setTimeout` schedules the call on Deno's
   * event loop, as in a browser, and returns an id for `clearTimeout`. The
   * timer holds this Channel (and its buffers) until it fires or is cleared,
   * so both the NAME frame and `close()` clear it: a connection that ended is
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

  /**
   * Not in the book: the queue per client and its one writer. The book's
   * `send()` called `channel.send()`, which blocked the whole server while one
   * slow client's socket buffer was full; here `send()` only queues, and this
   * writer, one per client while anything is queued, writes what is queued
   * in one write per turn.
   *
   * `conn.write(bytes)` resolves with how many bytes the kernel took, which
   * may be fewer than were given when the socket's send buffer is nearly
   * full (a partial write, as Python's `socket.send()` may make). So it loops
   * on the rest until all is written; `await` lets the loop serve everyone
   * else meanwhile.
   */
  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        // splice(0) takes every queued chunk and leaves the queue empty, so
        // what send() queues meanwhile waits for the next turn of this loop.
        const queue = this.#queue.splice(0);
        // A single frame is written as it is, not copied: #broadcast hands
        // every receiver the same buffer, and a copy per receiver would undo
        // the point of encoding it once.
        let chunk: Uint8Array;
        if (queue.length === 1) {
          chunk = queue[0];
        } else {
          chunk = concat(queue);
        }
        let rest = chunk;
        while (rest.length > 0) {
          const written = await this.conn.write(rest);
          rest = rest.subarray(written);
        }
        this.#queued -= chunk.length;
      }
    } catch (error) {
      this.close(`write failed: ${error}`);
    }
  }

  /**
   * The book's sock.close(). Closes it once; that ends a pending read (it rejects
   * with Deno.errors.Interrupted, which `events()` catches), and so
   * `events()`.
   */
  close(reason = "closed"): void {
    if (this.dropReason !== undefined) return;
    this.dropReason = reason;
    this.clearDeadline();
    closeQuietly(this.conn);
  }
}

/**
 * Closes a connection, ignoring "already closed": a drop, the shutdown and
 * the end of the client's events may each be first to close it.
 */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

// --- Not in the book: select's inputs, as async iterables of events ---

/** What a loop waits on: the book's `inputs`, as events. */
type Event =
  | { source: "server"; conn: Deno.TcpConn }
  // line null: the end of stdin; unterminated: a last line with no newline
  | { source: "stdin"; line: string | null; unterminated?: boolean }
  | { source: "signal"; signal: Deno.Signal }
  // data null: the connection is gone; bytes: the size of data's frames
  | {
    source: "client";
    channel: Channel;
    data: string[] | null;
    bytes: number;
  };
type Mux = AsyncIterable<Event> & { add(it: AsyncIterable<Event>): void };

/**
 * The book's select.select(inputs, self.outputs, []): one stream of
 * whatever is ready.
 *
 * `MuxAsyncIterator` (from Deno's standard library) merges async iterables
 * into one. Its `add()` calls the added iterable's `next()` at once, so every
 * input is being waited on from the moment it is added, as a socket is from
 * the moment it is in select's list. It yields the events in the order they
 * came: whichever input produced a value first is yielded first, and inputs
 * ready at the same time come in the order they became ready, with no input
 * ranked before another (the book's loop handled `readable` in list order:
 * the server socket, then stdin, then the clients). It pulls each input only
 * as its consumer asks: after yielding an input's event it calls that
 * input's `next()` again only when the loop asks for the event after it, so
 * each input has at most one event waiting, and a client's next read starts
 * only once its last event has been handled. `add()` also works while the
 * loop runs, as the book's `inputs.append(client)` does. When the loop leaves
 * with `break`, the inputs are not stopped: their pending reads go on until
 * their connections are closed (`shutdown()`) or the process exits.
 */
function select(...inputs: AsyncIterable<Event>[]): Mux {
  const mux = new MuxAsyncIterator();
  for (const input of inputs) mux.add(input);
  return mux;
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
 * The listening socket's events, one per accepted connection: the book's
 * `self.server` in select's `inputs`.
 *
 * Each of select's inputs here is an async generator (`async function*`).
 * Calling one runs none of its body; each call of its `next()` runs the body
 * up to its next `yield` and resolves with the value yielded, and the body
 * then waits at that `yield` until `next()` is called again. So this one is
 * inside `listener.accept()` only while `MuxAsyncIterator` waits for its next
 * event, and it is paused at `yield` while the loop handles the connection it
 * accepted: being waited on by the mux is what being in select's list was.
 * A `return` (here, once the listener is closed) ends the input.
 */
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
 * Lines typed, then one `line: null` event at the end of stdin: the book's
 * `sys.stdin` in select's list, and its `sys.stdin.readline()`.
 *
 * `Deno.stdin.read(chunk)` is one read(2) of standard input into `chunk`: it
 * resolves with how many bytes it put there (whatever the terminal or pipe
 * had, not one line), or null at the end of stdin. It is not split into lines
 * for us, so this generator keeps the bytes after the last newline and splits
 * them itself. Deno's other way, `Deno.stdin.readable` piped through
 * `TextLineStream`, would split lines for us, but it can lose the first line
 * typed on Unix (denoland/deno#35601, open: a read the stream starts and then
 * cancels is left running and takes that line). Plain `read()` calls are
 * never cancelled, so every byte read comes here and no line can be lost.
 * A read that is pending cannot be cancelled either; that is why the script
 * ends with `Deno.exit(0)`. A last line without a newline still counts as a
 * line. A line is kept to at most MAX_LINE_CHARS (the
 * rest, up to its newline, is dropped), so a stdin without newlines cannot
 * grow it forever; a client refuses such a line as too long to send. The
 * book's loop spun at the end of stdin, as `select` kept saying it was
 * readable.
 */
async function* stdinLines(who: "server" | "client"): AsyncGenerator<Event> {
  refuseBackgroundTerminal(who);
  const chunk = new Uint8Array(STDIN_READ_BYTES);
  const text = new TextDecoder(); // stream: true keeps a character cut in two
  let pending = "";
  let dropping = false; // past MAX_LINE_CHARS: the rest of this line is dropped
  while (true) {
    let n: number | null;
    try {
      n = await Deno.stdin.read(chunk);
    } catch (error) {
      // A stdin that cannot be read at all (`nohup … &` at a terminal gives
      // one open for writing only): the same as its end, with a line why.
      const { message } = error as Error;
      console.error(
        `Note: stdin cannot be read (${message}); the ${who} goes on ` +
          "as at the end of input.",
      );
      break;
    }
    if (n === null) break;
    let rest = text.decode(chunk.subarray(0, n), { stream: true });
    let end = rest.indexOf("\n");
    while (end >= 0) {
      if (!dropping) pending += rest.slice(0, end);
      yield { source: "stdin", line: pending.slice(0, MAX_LINE_CHARS) };
      pending = "";
      dropping = false;
      rest = rest.slice(end + 1);
      end = rest.indexOf("\n");
    }
    if (!dropping) pending += rest;
    if (pending.length > MAX_LINE_CHARS) {
      pending = pending.slice(0, MAX_LINE_CHARS);
      dropping = true;
    }
  }
  if (!dropping) pending += text.decode(); // the end of a character cut in two
  if (pending !== "") {
    yield { source: "stdin", line: pending, unterminated: true };
  }
  yield { source: "stdin", line: null };
}

/**
 * Not in the book: a background job's terminal. A process that reads the
 * terminal while it is not the terminal's foreground job (started with `&`)
 * is sent SIGTTIN, which stops it: the server would stop serving without a
 * word (under `deno task` the shell does not even show it stopped), where the
 * book's server, which only waits with `select` until a line is there, goes
 * on serving. A Deno script cannot wait for stdin without reading it, nor
 * ask whether it is in the foreground without more permissions, and with a
 * SIGTTIN listener the pending read is retried for ever (a core at 100%). So
 * at the first SIGTTIN it says why and how to run it, and exits 1 (closing
 * every connection). Stdin that is not a terminal (a pipe, /dev/null) never
 * gets SIGTTIN; Windows has no SIGTTIN.
 */
function refuseBackgroundTerminal(who: "server" | "client"): void {
  if (Deno.build.os === "windows" || !Deno.stdin.isTerminal()) return;
  const why = who === "server"
    ? "the server reads its stdin for the line that stops it: run it in " +
      "the foreground, or in the background with stdin from /dev/null " +
      "(... </dev/null &) and stop it with kill %1"
    : "the client reads the lines to send from it: run it in the foreground";
  Deno.addSignalListener("SIGTTIN", () => {
    console.error(
      `Error: a background job may not read the terminal, and ${why}`,
    );
    Deno.exit(1);
  });
}

/**
 * Ctrl-C, or SIGTERM where there is one: the book's
 * `signal.signal(signal.SIGINT, self.sighandler)`, and the client's
 * `except KeyboardInterrupt:`, as one event for select.
 *
 * `Deno.addSignalListener(name, fn)` calls `fn` for each such signal and,
 * while any listener is installed, stops the signal's default action (for
 * SIGINT, exiting with 130). The listeners are added when this is called
 * (before the ready line, so a Ctrl-C right after it gets the shutdown) and
 * are never removed, so they stay until the process exits: a second signal,
 * such as the one a terminal's Ctrl-C delivers to `deno task` and that it then
 * passes on again, finds a listener that does nothing more, instead of
 * Deno's default exit with 130 in the middle of the shutdown. Windows has no
 * SIGTERM listener in Deno, only SIGINT and SIGBREAK.
 *
 * `Promise.withResolvers()` returns a promise together with the `resolve`
 * function that settles it, so the listener can be that function itself. A
 * promise settles once; later calls do nothing, so this is one event however
 * many signals come.
 */
function interrupts(): Interrupts {
  const { promise, resolve } = Promise.withResolvers<Deno.Signal>();
  Deno.addSignalListener("SIGINT", () => resolve("SIGINT"));
  // On Windows too, since Deno 2.7.6.
  Deno.addSignalListener("SIGTERM", () => resolve("SIGTERM"));
  // An async generator that waits for the first signal, yields one event,
  // and ends: calling it makes the iterable that MuxAsyncIterator reads.
  async function* firstSignal(): AsyncGenerator<Event> {
    const signal = await promise;
    yield { source: "signal", signal };
  }
  return Object.assign(firstSignal(), { signalled: promise });
}

/**
 * The signals as `interrupts()` gives them: select's input, and the promise
 * of the first signal's name, for a wait outside the loop (the client's
 * handshake).
 */
type Interrupts = AsyncIterable<Event> & { signalled: Promise<Deno.Signal> };

// --- Not in the book: the client's handshake, bounded and interruptible ---

/** Why a handshake failed, for the line after the book's "Failed to connect". */
class HandshakeError extends Error {}

/**
 * Not in the book: the client's handshake, bounded and interruptible. The
 * book's `receive()` waited for the server's CLIENT: reply forever, and a
 * Ctrl-C there ended the script with a traceback. Here the reply races the
 * first signal and a timer of NAME_TIMEOUT_MS (the time the server gives a
 * client to send its NAME): whichever comes first. When the reply never
 * comes or the connection ends before it, the likely cause is a server that
 * speaks the book's frames (its Python script reads our 4-byte header as the
 * start of its 8-byte one), so the error says which option speaks them.
 */
async function firstReply(
  channel: Channel,
  interrupted: Promise<Deno.Signal>,
): Promise<{ value: string } | { signal: Deno.Signal }> {
  const seconds = NAME_TIMEOUT_MS / 1000;
  const hint = channel.wire === "json"
    ? "; a server that speaks the book's frames (the book's Python script) " +
      "needs --wire=book"
    : "";
  // `.then(onValue, onError)` turns the read's end and its errors into
  // values, so the read may lose the race and settle later (when the caller
  // closes the channel) without an unhandled rejection.
  const reply = channel.receive().then(
    (text): { value: string } | { failure: string } =>
      text === null
        ? {
          failure: `the server closed the connection before its reply${hint}`,
        }
        : { value: text },
    (error: Error) => ({
      // A reset (the book's server crashes on our frame and resets) or a
      // hang-up inside a frame ends the connection; anything else is a
      // reply that is not a frame of this wire.
      failure: error instanceof Deno.errors.ConnectionReset ||
          error.message === HUNG_UP_MID_FRAME
        ? `the connection ended before the server's reply ` +
          `(${error.message})${hint}`
        : `the server's reply is not a chat frame: ${error.message}`,
    }),
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<{ failure: string }>((resolve) => {
    timer = setTimeout(
      () => resolve({ failure: `no reply to NAME within ${seconds} s${hint}` }),
      NAME_TIMEOUT_MS,
    );
  });
  try {
    const first = await Promise.race([
      reply,
      late,
      interrupted.then((signal) => ({ signal })),
    ]);
    if ("failure" in first) throw new HandshakeError(first.failure);
    return first;
  } finally {
    clearTimeout(timer);
  }
}

/** `work`'s value, or the name of the first signal if it comes first. */
async function beforeSignal<T>(
  work: Promise<T>,
  interrupted: Promise<Deno.Signal>,
): Promise<{ value: T } | { signal: Deno.Signal }> {
  return await Promise.race([
    work.then((value) => ({ value })),
    interrupted.then((signal) => ({ signal })),
  ]);
}

/**
 * A signal before the client's loop began: the book's line for Ctrl-C, as
 * `run()` prints it, and no client.
 */
function interruptedEarly(signal: Deno.Signal, trace?: Trace): undefined {
  trace?.(`signal: ${signal} -> interrupted`);
  console.log(" Client interrupted. ");
  return undefined;
}

// --- Not in the book: bounds, and what a failed listen or connect says ---

const MAX_FRAME_BYTES = 64 * 1024;
const MAX_QUEUE_BYTES = 1024 * 1024;
const NAME_TIMEOUT_MS = 10_000;
const MAX_NAME_CHARS = 64; // a name is repeated in every message it sends
const NAME_PREFIX = "NAME: "; // a client's first frame: NAME_PREFIX + its name
const IDLE_READ_BYTES = 1024; // a silent connection's read buffer
const STDIN_READ_BYTES = 16 * 1024;
const MAX_LINE_CHARS = MAX_FRAME_BYTES + 1; // more than any line a client sends
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards
const LEAVE_FLUSH_MS = 5_000; // how long a leaving client waits to send the rest
const PREVIEW_BYTES = 32; // of client data in a trace line
const HUNG_UP_MID_FRAME = "hung up mid-frame";

/**
 * The listening socket, or a line on stderr and exit 1: the permission
 * missing (and the command that has it), or why the port cannot be had.
 */
function listenOrExit(port: number, trace?: Trace): Deno.TcpListener {
  try {
    return Deno.listen({ hostname: SERVER_HOST, port });
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      const args = [`--name=${CHAT_SERVER_NAME}`];
      permissionError("listen on", port, args, undefined, trace);
    }
    const why = `${SERVER_HOST}:${port}: ${(error as Error).message}`;
    console.error(`Error: cannot listen on ${why}`);
    Deno.exit(1);
  }
}

/**
 * Not in the book: `deno run` without --allow-net for localhost (answered
 * "n" at Deno's prompt, or run with --no-prompt). Says which permission is
 * missing and the command that has it, and exits 1.
 */
function permissionError(
  what: "listen on" | "connect to",
  port: number,
  args: string[],
  wire?: Wire,
  trace?: Trace,
): never {
  const command = [
    `deno run --allow-net=${SERVER_HOST} ${FILE}`,
    ...args,
    `--port=${port}`,
  ];
  if (wire !== undefined && wire !== "json") command.push("--wire=book");
  if (trace) command.push("--trace");
  console.error(
    `Error: to ${what} ${SERVER_HOST}:${port} it needs network permission: ` +
      command.join(" "),
  );
  Deno.exit(1);
}

/** An address as the book's print shows Python's tuple: ('127.0.0.1', 55536). */
function pythonAddress(addr: Deno.NetAddr): string {
  return `('${addr.hostname}', ${addr.port})`;
}

// --- Not in the book: tracing (--trace) ---

/** `--trace`: one line per event the loop handles, or undefined (off). */
type Trace = ((line: string) => void) | undefined;

/**
 * Client data as a trace line shows it: at most 32 bytes, in double quotes,
 * then "..." if there was more. Printable UTF-8 is shown as its text (Korean
 * too); every other byte as \\xNN: control bytes, bytes that are not valid
 * UTF-8, and `"` and `\\`, so that the quotes always hold the whole preview.
 * A character that the 32 bytes would cut in two is left for the "...".
 */
export function preview(bytes: Uint8Array): string {
  const end = Math.min(bytes.length, PREVIEW_BYTES);
  let text = "";
  let at = 0;
  while (at < end) {
    const char = printableChar(bytes, at);
    if (char !== undefined && at + char.size > end) break; // cut in two
    if (char !== undefined) {
      text += char.text;
      at += char.size;
    } else {
      text += byteEscape(bytes[at]);
      at += 1;
    }
  }
  return `"${text}${bytes.length > PREVIEW_BYTES ? "..." : ""}"`;
}

/** `\\x0a`: a byte as a preview escapes it. */
function byteEscape(byte: number): string {
  return `\\x${byte.toString(16).padStart(2, "0")}`;
}

/**
 * The character whose UTF-8 starts at `bytes[at]`, with its size in bytes,
 * if it is valid UTF-8 and printable; else undefined. The lead byte gives the
 * size (0xc2-0xdf: 2, 0xe0-0xef: 3, 0xf0-0xf4: 4); the fatal decoder refuses
 * what is not UTF-8 (a continuation byte missing, a surrogate, an overlong
 * form). \\p{C} (controls, format characters, unassigned code points), line
 * and paragraph separators, `"` and `\\` do not count as printable.
 */
function printableChar(
  bytes: Uint8Array,
  at: number,
): { text: string; size: number } | undefined {
  const lead = bytes[at];
  let size = 0;
  if (lead < 0x80) size = 1;
  else if (lead >= 0xc2 && lead <= 0xdf) size = 2;
  else if (lead >= 0xe0 && lead <= 0xef) size = 3;
  else if (lead >= 0xf0 && lead <= 0xf4) size = 4;
  if (size === 0 || at + size > bytes.length) return undefined;
  let text: string;
  try {
    text = decoder.decode(bytes.subarray(at, at + size));
  } catch {
    return undefined; // not UTF-8
  }
  if (!/^[^\p{C}\p{Zl}\p{Zp}"\\]$/u.test(text)) return undefined;
  return { text, size };
}

/** `preview` of a text's UTF-8, encoding no more of it than is shown. */
function previewText(text: string): string {
  return preview(encoder.encode(text.slice(0, PREVIEW_BYTES + 1)));
}

/** A count and its noun in good English: `1 frame`, `2 frames`. */
function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// --- Not in the book: the command line (the book's argparse) ---

const FILE = "2_3_chat_server_with_select.ts";
const USAGE =
  `usage: ${FILE} [-h] --name NAME --port PORT [--wire {json,book}] [--trace]`;
const HELP = `${USAGE}

Socket Server Example with Select

options:
  -h, --help          show this help message and exit
  --name NAME         "server" runs the chat server; any other name joins it
                      as a client of that name
  --port PORT         port the server listens on (0 picks a free one), or the
                      port a client connects to
  --wire {json,book}  a client's frames: json (default), or book to join the
                      book's own Python server (the server speaks both)
  --trace             print each event the loop handles on stderr`;

/**
 * argparse's error: usage and `FILE: error: message` on stderr, exit 2.
 */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

/** The arguments, checked as argparse checks them; exits 2 for bad ones. */
function parseCommandLine(argv: string[]): {
  name: string;
  port: number;
  wire: Wire;
  trace: Trace;
} {
  const args = parseArgs(argv, {
    string: ["name", "port", "wire"],
    boolean: ["help", "trace"],
    alias: { h: "help" },
    unknown: (arg: string) => argumentError(`unrecognized arguments: ${arg}`),
  });
  const missingFlags: string[] = [];
  if (args.name === undefined) missingFlags.push("--name");
  if (args.port === undefined) missingFlags.push("--port");
  const port = Number(args.port);
  if (args.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  if (missingFlags.length > 0) {
    const missing = missingFlags.join(", ");
    argumentError(`the following arguments are required: ${missing}`);
  }
  if (!/^\d+$/.test(args.port!) || port > 65535) {
    argumentError(`argument --port: invalid port value: '${args.port}'`);
  }
  const wires: Record<string, Wire> = {
    json: "json",
    // The book's frame header is what struct.pack("L") makes on this system.
    book: Deno.build.os === "windows" ? "book4" : "book8",
  };
  const choice = args.wire ?? "json";
  const wire = Object.hasOwn(wires, choice) ? wires[choice] : undefined;
  if (wire === undefined) {
    argumentError(
      `argument --wire: invalid choice: '${args.wire}' (choose from 'json', 'book')`,
    );
  }
  if (args.name === CHAT_SERVER_NAME && args.wire !== undefined) {
    // The server learns each client's wire from its first frame.
    argumentError(
      "argument --wire: not allowed with --name=server (the server speaks both)",
    );
  }
  const trace: Trace = args.trace
    ? (line) => console.error(`trace: ${line}`)
    : undefined;
  return { name: args.name!, port, wire, trace };
}

// The book's `if __name__ == "__main__":` block is main() above. This comes
// last because classes are not hoisted: every class and constant above must
// be defined before main() runs.
if (import.meta.main) await main();
