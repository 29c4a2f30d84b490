/**
 * A chat client for the 2_3 load, in either frame format: ours (JSON) or the
 * book's (pickle), both encoded by recipe 2_3's own `encodeFrame`. Nothing
 * received is ever unpickled or parsed: the client cuts whole frames and
 * hands their bytes on.
 */

import { encodeFrame, type Wire } from "../2_3_chat_server_with_select.ts";
import { writeAll } from "./net.ts";
import { errorKind } from "./stats.ts";

/** The message the sender repeats; receivers count frames holding "BENCHMSG". */
export const MESSAGE = "BENCHMSG the quick brown fox jumps over the lazy dog";
const MAX_FRAME_BYTES = 1024 * 1024;

export interface ChatFormat {
  name: "json" | "pickle";
  headerBytes: number;
  /** The whole frame (header + payload) for `args` = [text]. */
  frame(text: string): Uint8Array;
}

/**
 * A format whose frames recipe 2_3 encodes (`encodeFrame`, the same bytes
 * its server and client send), each made once per text: the sender repeats
 * one message, and the generator's CPU should go to the load, not to
 * encoding.
 */
function format(name: ChatFormat["name"], wire: Wire): ChatFormat {
  const frames = new Map<string, Uint8Array>();
  return {
    name,
    headerBytes: wire === "book8" ? 8 : 4,
    frame(text) {
      let frame = frames.get(text);
      if (!frame) frames.set(text, frame = encodeFrame(text, wire));
      return frame;
    },
  };
}

/** Our frames: a 4-byte big-endian length, then a UTF-8 JSON array. */
export const JSON_FORMAT: ChatFormat = format("json", "json");

/**
 * The book's frames on 64-bit Linux: an 8-byte header (the big-endian
 * length, then 4 zero bytes), then `pickle.dumps((text,))` as Python 3.8+
 * writes it (recipe 2_3's `encodeBookPickle`, tested against python3).
 */
export function pickleFormat(): ChatFormat {
  return format("pickle", "book8");
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
