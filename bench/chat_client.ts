/**
 * A chat client for the benchmark, in either frame format. Ours is a 4-byte
 * big-endian length + a UTF-8 JSON array; the book's is an 8-byte header (the
 * big-endian length, then 4 zero bytes on 64-bit Linux) + `pickle.dumps(args)`.
 * The pickle payloads we send are made once by asking `python3` for
 * `pickle.dumps`; nothing received is ever unpickled or parsed: the client
 * cuts whole frames and hands their bytes on.
 */

import { writeAll } from "./net.ts";
import { errorKind } from "./stats.ts";

const encoder = new TextEncoder();
/** The message the sender repeats; receivers count frames holding "BENCHMSG". */
export const MESSAGE = "BENCHMSG the quick brown fox jumps over the lazy dog";
const MAX_FRAME_BYTES = 1024 * 1024;

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

/** Does `haystack` hold the bytes of `needle`? */
export function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/** One client connection that cuts whole frames and hands each payload on. */
export class ChatClient {
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
