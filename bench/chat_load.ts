/**
 * The 2_3 scenario: N chat clients join one after the other (the book's
 * handshake: send `NAME: <name>`, receive `CLIENT: <ip>`), then one of them
 * sends with at most W messages in flight; the server fans each message out
 * to the N-1 others. A message is complete when the last of them has it.
 * Reports deliveries/s and the latency from send to the last delivery.
 *
 * Frames: ours is a 4-byte big-endian length + a UTF-8 JSON array; the
 * book's is an 8-byte header (the big-endian length, then 4 zero bytes on
 * 64-bit Linux) + `pickle.dumps(args)`. The pickle payloads we send are made
 * once by asking `python3` for `pickle.dumps`; nothing received is ever
 * unpickled or parsed: receivers cut whole frames and look for a marker in
 * the bytes.
 */

import { connect, type Phases, READY_MS, Watchdog, writeAll } from "./load.ts";
import { ErrorCounter, errorKind, type LoadResult, Samples } from "./stats.ts";

const encoder = new TextEncoder();
export const MESSAGE = "BENCHMSG the quick brown fox jumps over the lazy dog";
const MARKER = encoder.encode("BENCHMSG");
const CLIENT_REPLY = encoder.encode("CLIENT: ");
const HUNG_UP = encoder.encode("hung up");
const MAX_FRAME_BYTES = 1024 * 1024;
const STALL_MS = 5_000;

export interface ChatFormat {
  name: "json" | "pickle";
  headerBytes: number;
  /** The whole frame (header + payload) for `args` = [text]. */
  frame(text: string): Uint8Array;
}

function withHeader(payload: Uint8Array, headerBytes: number): Uint8Array {
  const frame = new Uint8Array(headerBytes + payload.length);
  new DataView(frame.buffer).setUint32(0, payload.length);
  frame.set(payload, headerBytes);
  return frame;
}

export const JSON_FORMAT: ChatFormat = {
  name: "json",
  headerBytes: 4,
  frame: (text) => withHeader(encoder.encode(JSON.stringify([text])), 4),
};

/** The book's frames, each payload `pickle.dumps((text,))` made by python3. */
export async function pickleFormat(texts: string[]): Promise<ChatFormat> {
  const script = "import pickle,sys\n" +
    "for a in sys.argv[1:]:\n" +
    "    p = pickle.dumps((a,))\n" +
    "    sys.stdout.buffer.write(len(p).to_bytes(4, 'big') + p)\n";
  const { code, stdout, stderr } = await new Deno.Command("python3", {
    args: ["-c", script, ...texts],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(
      `python3 could not make the pickle payloads: ${
        new TextDecoder().decode(stderr)
      }`,
    );
  }
  const frames = new Map<string, Uint8Array>();
  let offset = 0;
  for (const text of texts) {
    const length = new DataView(stdout.buffer, stdout.byteOffset + offset)
      .getUint32(0);
    frames.set(
      text,
      withHeader(stdout.subarray(offset + 4, offset + 4 + length), 8),
    );
    offset += 4 + length;
  }
  return {
    name: "pickle",
    headerBytes: 8,
    frame(text) {
      const frame = frames.get(text);
      if (!frame) {
        throw new Error(`no pickle payload made for ${JSON.stringify(text)}`);
      }
      return frame;
    },
  };
}

/** Every text a run sends, so pickleFormat can make them all at once. */
export function chatTexts(clients: number): string[] {
  return [
    ...Array.from({ length: clients }, (_, i) => `NAME: bench${i}`),
    ...[0, 1, 2].map((i) => `NAME: check${i}`),
    MESSAGE,
  ];
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/** One client connection that cuts whole frames and hands each payload on. */
class ChatClient {
  onFrame: (payload: Uint8Array) => void = () => {};
  closed: Promise<string>;

  constructor(readonly conn: Deno.TcpConn, readonly format: ChatFormat) {
    this.closed = this.#pump();
  }

  async #pump(): Promise<string> {
    let pending = new Uint8Array(256 * 1024);
    let length = 0;
    const header = this.format.headerBytes;
    try {
      while (true) {
        if (length === pending.length) {
          const grown = new Uint8Array(pending.length * 2);
          grown.set(pending);
          pending = grown;
        }
        const n = await this.conn.read(pending.subarray(length));
        if (n === null) return "closed by the server";
        length += n;
        let start = 0;
        while (length - start >= header) {
          const size = new DataView(pending.buffer, start).getUint32(0);
          if (size > MAX_FRAME_BYTES) return "frame too large";
          if (length - start < header + size) break;
          this.onFrame(pending.subarray(start + header, start + header + size));
          start += header + size;
        }
        pending.copyWithin(0, start, length);
        length -= start;
      }
    } catch (error) {
      return errorKind(error);
    }
  }

  send(text: string): Promise<void> {
    return writeAll(this.conn, this.format.frame(text));
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** Connects and does the book's handshake (NAME: -> CLIENT:). */
async function join(
  port: number,
  name: string,
  format: ChatFormat,
  dog: Watchdog,
  retryRefusedMs = 0,
): Promise<ChatClient> {
  const conn = await connect(port, dog, retryRefusedMs);
  const client = new ChatClient(conn, format);
  const welcomed = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no CLIENT: reply for ${name}`)),
      STALL_MS,
    );
    client.onFrame = (payload) => {
      if (!contains(payload, CLIENT_REPLY)) return;
      clearTimeout(timer);
      client.onFrame = () => {};
      resolve();
    };
    client.closed.then((why) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${why} during the handshake`));
    });
  });
  try {
    await client.send(`NAME: ${name}`);
    await welcomed;
    return client;
  } catch (error) {
    client.close();
    throw error;
  }
}

/**
 * Clients leave one at a time, each after the others have heard the last
 * one's "hung up" notice: the book's server crashes when clients leave at
 * once (a notice to a client already gone raises, and its handler removes
 * that socket a second time).
 */
async function leaveOneByOne(clients: ChatClient[]): Promise<void> {
  for (let i = 0; i < clients.length; i++) {
    const others = clients.slice(i + 1);
    const heard = others.map((client) =>
      new Promise<void>((resolve) => {
        client.onFrame = (payload) => {
          if (contains(payload, HUNG_UP)) resolve();
        };
        client.closed.then(() => resolve());
      })
    );
    clients[i].close();
    await clients[i].closed;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const allHeard = await Promise.race([
      Promise.all(heard).then(() => true),
      new Promise<boolean>((resolve) =>
        timer = setTimeout(() => resolve(false), STALL_MS)
      ),
    ]);
    clearTimeout(timer);
    if (!allHeard) {
      // This server sends no notices: the rest leave together.
      for (const client of others) client.close();
      await Promise.all(others.map((client) => client.closed));
      return;
    }
  }
}

/** Correctness: three clients join; one message reaches the two others. */
export async function checkChat(
  port: number,
  format: ChatFormat,
): Promise<void> {
  const dog = new Watchdog();
  const clients: ChatClient[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      clients.push(await join(port, `check${i}`, format, dog, READY_MS));
    }
    const got = clients.slice(1).map((client) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error("a message was not delivered")),
          STALL_MS,
        );
        client.onFrame = (payload) => {
          if (contains(payload, MARKER)) {
            clearTimeout(timer);
            resolve();
          }
        };
      })
    );
    await clients[0].send(MESSAGE);
    await Promise.all(got);
  } finally {
    await leaveOneByOne(clients);
    dog.stop();
  }
}

/** The timed run: `clients` join, client 0 sends with at most `window` in flight. */
export async function chatLoad(
  port: number,
  format: ChatFormat,
  clients: number,
  window: number,
  phases: Phases,
): Promise<LoadResult> {
  const dog = new Watchdog();
  const joined: ChatClient[] = [];
  let finished = false;
  try {
    for (let i = 0; i < clients; i++) {
      joined.push(await join(port, `bench${i}`, format, dog));
    }
    const [sender, ...receivers] = joined;
    const errors = new ErrorCounter();
    let measuring = false;
    let measureEnd = Infinity;
    let deliveries = 0;
    const samples = new Samples();
    const sentAt: number[] = [];
    const left: number[] = [];
    let completed = 0;
    const received = new Array<number>(receivers.length).fill(0);
    let sending = Promise.resolve();
    let wake = () => {};

    receivers.forEach((client, r) => {
      client.onFrame = (payload) => {
        if (!contains(payload, MARKER)) return;
        const k = received[r]++;
        if (measuring && performance.now() <= measureEnd) deliveries++;
        if (--left[k] === 0) {
          if (measuring && !Number.isNaN(sentAt[k])) {
            samples.add(performance.now() - sentAt[k]);
          }
          completed++;
          wake();
        }
      };
      client.closed.then((why) => {
        if (!finished) errors.add(`receiver ${why}`);
      });
    });

    const phase = (seconds: number, record: boolean) =>
      new Promise<void>((resolve) => {
        const end = performance.now() + seconds * 1000;
        const stallTimer = setTimeout(() => done(), seconds * 1000 + STALL_MS);
        const endTimer = setTimeout(() => wake(), seconds * 1000);
        const done = () => {
          clearTimeout(stallTimer);
          clearTimeout(endTimer);
          wake = () => {};
          resolve();
        };
        wake = () => {
          const now = performance.now();
          if (now >= end) {
            if (completed === sentAt.length) done();
            return;
          }
          while (
            sentAt.length - completed < window && sentAt.length < 50_000_000
          ) {
            sentAt.push(record ? performance.now() : NaN);
            left.push(receivers.length);
            sending = sending.then(() => sender.send(MESSAGE)).catch((e) => {
              errors.add(`send ${errorKind(e)}`);
            });
          }
        };
        wake();
      });

    await phase(phases.warmup, false);
    measuring = true;
    measureEnd = performance.now() + phases.seconds * 1000;
    await phase(phases.seconds, true);
    measuring = false;
    finished = true;
    const missing = left.reduce((sum, n) => sum + n, 0);
    if (missing > 0) errors.add("undelivered", missing);
    return {
      count: deliveries,
      seconds: phases.seconds,
      p50: samples.quantile(0.5),
      p99: samples.quantile(0.99),
      errors: { ...errors.counts },
      notes: [`${samples.size} messages to ${receivers.length} receivers`],
    };
  } finally {
    finished = true;
    await leaveOneByOne(joined);
    dog.stop();
  }
}
