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
 * With the book's script beside it (BOOK_DIR), both sides mix in one room:
 *
 *     python3 $BOOK_DIR/2_3_chat_server_with_select.py --name=client3 --port=8800
 *     python3 $BOOK_DIR/2_3_chat_server_with_select.py --name=server --port=8801
 *     deno task 2_3 --name=client4 --port=8801 --wire=book
 *
 * From Python to Deno: select's inputs (connections, stdin, clients, Ctrl-C)
 * become async iterables of events merged by `MuxAsyncIterator`, so `run()`
 * keeps the book's loop and branches. A client's event is what one read
 * completed: the frames it made whole, in order, where the book's
 * `receive()` returned one frame per round of `select` (so a burst goes out
 * in one write per receiver). The write set becomes a queue and one
 * writer per client. Connection ids count from 1: Deno has no `fileno()`.
 *
 * Two wires, one room: the server learns each connection's frame from the
 * byte after its first 4 (see `Wire`): the book's (`struct.pack("L")`'s 8
 * bytes on 64-bit Linux and macOS, 4 on Windows, then `pickle.dumps(args)`) or
 * this project's (a 4-byte big-endian length, then UTF-8 JSON). The book's
 * pickle is read by a strict decoder of one byte grammar, a pickled 1-tuple
 * of one str, never by an unpickler; anything else drops its sender. The
 * server encodes every frame itself, in each receiver's own wire, so a book
 * client in this room can never be handed a malicious pickle by another
 * client: the book's worst hole, closed for the book's own clients.
 *
 * Memory per client: a silent client's pending `conn.read(buffer)` holds
 * its buffer for as long as the client is silent, so that buffer is 1 KiB; a
 * longer frame gets a buffer of its own size, given back once it is read. At
 * 2,000 named idle clients that is about 11 KB each (`deno task bench
 * --only=2_3`), once V8 has given back the heap that the 2 million join
 * notices grew, some seconds after the last; right after them, about 41 KB.
 *
 * Fixed from the book:
 * - One silent connection froze everyone (its name was read with a blocking
 *   `receive()`): NAME is now its first event, due within 10 seconds.
 * - `receive()` lost data when TCP split a frame; `send()` wrote one in two
 *   parts (Nagle delays). Frames are read whole, written in one buffer.
 * - `pickle.loads` ran whatever code a peer sent. A frame over 64 KiB or cut
 *   short, a body that is not a JSON array of text or a pickled text, a first
 *   frame other than NAME, or 1 MiB queued for a client that stopped reading:
 *   that client is dropped with a log line.
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
const NAME_PREFIX = "NAME: "; // a client's first frame: NAME_PREFIX + its name
const IDLE_READ_BYTES = 1024; // a silent connection's read buffer
const STDIN_READ_BYTES = 16 * 1024;
const MAX_LINE_CHARS = MAX_FRAME_BYTES + 1; // more than any line a client sends
const ACCEPT_PAUSE_MS = 100; // after an accept() that failed for want of resources
const SIGNAL_GRACE_MS = 100; // after shutdown, for the SIGINT `deno task` forwards
const LEAVE_FLUSH_MS = 5_000; // how long a leaving client waits to send the rest
const PREVIEW_BYTES = 32; // of client data in a trace line
const HUNG_UP_MID_FRAME = "hung up mid-frame";
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
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Not in the book: the wire detection. The book speaks only its own frame.
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

/** `--trace`: one line per event the loop handles, or undefined (off). */
type Trace = ((line: string) => void) | undefined;

/** What a loop waits on: the book's `inputs`, as events. */
type Event =
  | { source: "server"; conn: Deno.TcpConn }
  // line null: the end of stdin; cut: a last line that had no newline
  | { source: "stdin"; line: string | null; cut?: boolean }
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
 * book: def send(channel, *args): its bytes, one frame of `wire`, header and
 * body in one buffer (the book wrote them in two `send()` calls).
 */
export function encodeFrame(text: string, wire: Wire): Uint8Array {
  const body = wire === "json"
    ? encoder.encode(JSON.stringify([text]))
    : encodeBookPickle(text); // book: pickle.dumps(args)
  const header = HEADER_BYTES[wire];
  const bytes = new Uint8Array(header + body.length);
  // book: struct.pack("L", socket.htonl(len(buffer))). A DataView writes
  // big-endian by default; book8's other 4 header bytes stay 0.
  new DataView(bytes.buffer).setUint32(0, body.length);
  bytes.set(body, header);
  return bytes;
}

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

/** "1 frame", "2 frames": how a trace line counts. */
function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

/** What `takeFrame` found: a frame and its size, or how many bytes it needs. */
export type Taken =
  | { text: string; size: number }
  | { text: undefined; need: number };

/**
 * book: def receive(channel), as a pure function: the first whole frame at the
 * start of `bytes`, or how many bytes a whole frame needs. Throws for a bad
 * frame: a length over `maxFrame`, a book header whose last 4 bytes are not
 * zero, or a body that is not an array of one text (JSON) or a pickled
 * 1-tuple of one str (the book's, read by the strict decoder below).
 */
export function takeFrame(
  bytes: Uint8Array,
  wire: Wire,
  maxFrame: number,
): Taken {
  const header = HEADER_BYTES[wire];
  if (bytes.length < header) return { text: undefined, need: header };
  const length = frameLength(bytes, maxFrame)!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (wire === "book8" && view.getUint32(4) !== 0) {
    throw new Error("a book header whose last 4 bytes are not zero");
  }
  const size = header + length;
  if (bytes.length < size) return { text: undefined, need: size };
  const body = bytes.subarray(header, size);
  return { text: wire === "json" ? parseJson(body) : parsePickle(body), size };
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

// Not in the book: the strict pickle decoder. The book's chat frame body, a
// strict reader and an exact writer for `pickle.dumps((text,))`.
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
  // book: pickle.loads(...)[0], the str the tuple holds.
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
   * book: def receive(channel): the next whole frame's text; null at the end.
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

  /** book: def send(channel, *args): one text, in this connection's wire. */
  sendText(text: string): void {
    this.send(encodeFrame(text, this.wire ?? "json"));
  }

  /**
   * book: channel.send(...): queues a frame (see #flush for the writer);
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
   * book: sock.close(). Closes it once; that ends a pending read (it rejects
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

/**
 * book: select.select(inputs, self.outputs, []): one stream of whatever is
 * ready.
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
  let cut = false; // past MAX_LINE_CHARS: dropping the rest of this line
  while (true) {
    const n = await Deno.stdin.read(chunk);
    if (n === null) break;
    let rest = text.decode(chunk.subarray(0, n), { stream: true });
    let end = rest.indexOf("\n");
    while (end >= 0) {
      if (!cut) pending += rest.slice(0, end);
      yield { source: "stdin", line: pending.slice(0, MAX_LINE_CHARS) };
      pending = "";
      cut = false;
      rest = rest.slice(end + 1);
      end = rest.indexOf("\n");
    }
    if (!cut) pending += rest;
    if (pending.length > MAX_LINE_CHARS) {
      pending = pending.slice(0, MAX_LINE_CHARS);
      cut = true;
    }
  }
  if (!cut) pending += text.decode(); // the end of a character cut in two
  if (pending !== "") yield { source: "stdin", line: pending, cut: true };
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

/**
 * book: class ChatServer(object): one loop over whatever is ready, as with
 * select.
 */
export class ChatServer {
  clients = 0; // book: self.clients
  // book: self.clientmap, and self.outputs (the named ones): each connection's
  // name@ip, the book's get_client_name(), or "" until it sends its NAME.
  clientmap = new Map<Channel, string>();
  readonly server: Deno.TcpListener;
  #shuttingDown = false;

  /**
   * `trace`, when given (`--trace`), gets one line per event the loop
   * handles: what `select` would have returned, and what the loop did with
   * it. When it is not, each `this.trace?.(...)` below stops at the `?.`,
   * before its line is built: tracing off costs nothing.
   *
   * book: def __init__(self, port, backlog=5): `Deno.listen()` is socket(),
   * bind() and listen() in one, with SO_REUSEADDR set (on Unix) as the book
   * sets it.
   */
  constructor(port: number, readonly trace?: Trace) {
    try {
      this.server = Deno.listen({ hostname: SERVER_HOST, port });
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) {
        permissionError("listen on", port, [`--name=${CHAT_SERVER_NAME}`]);
      }
      const why = `${SERVER_HOST}:${port}: ${(error as Error).message}`;
      console.error(`Error: cannot listen on ${why}`);
      Deno.exit(1);
    }
    console.log(`Server listening to port: ${this.server.addr.port} ...`);
  }

  /**
   * book: def run(self): the loop, over the listening socket, every client
   * and `inputs` (the command line passes stdin and the signals). Returns
   * after `shutdown()`, once the loop has stopped.
   */
  async run(...inputs: AsyncIterable<Event>[]): Promise<void> {
    // book: inputs = [self.server, sys.stdin]
    const ready = select(accepts(this.server), ...inputs);
    let lastId = 0;
    // book: while running: readable, ... = select.select(...); for sock in
    // readable: here one event at a time, each one input that was ready.
    for await (const event of ready) {
      if (event.source === "server") {
        // book: if sock == self.server: a connection, whose NAME comes as an
        // event.
        lastId += 1; // book: client.fileno(), which Deno does not have
        const channel = new Channel(event.conn, lastId);
        const { hostname, port } = event.conn.remoteAddr;
        const from = `('${hostname}', ${port})`;
        console.log(`Chat server: got connection ${channel.id} from ${from}`);
        this.clientmap.set(channel, "");
        ready.add(channel.events()); // book: inputs.append(client)
        // Not in the book: the name deadline (see Channel.setDeadline).
        const seconds = NAME_TIMEOUT_MS / 1000;
        channel.setDeadline(
          NAME_TIMEOUT_MS,
          `sent no name within ${seconds} s`,
        );
        this.trace?.(
          `readable: the server socket -> accepted connection ${channel.id} ` +
            `from ${from}, its NAME due within ${seconds} s`,
        );
      } else if (event.source === "stdin") {
        // book: elif sock == sys.stdin: a line stops the server; the end of
        // stdin (a server run without a terminal) only stops watching it.
        if (event.line === null) {
          this.trace?.("readable: sys.stdin -> its end, no longer watched");
          continue;
        }
        this.trace?.("readable: sys.stdin -> a line, the server stops");
        this.shutdown();
        break;
      } else if (event.source === "signal") {
        // book: def sighandler(self, signum, frame):
        this.trace?.(`signal: ${event.signal} -> shutdown`);
        console.log("Shutting down server...");
        this.shutdown();
        break;
      } else {
        // book: else: # handle all other sockets
        this.#receive(event.channel, event.data, event.bytes);
      }
    }
  }

  /**
   * book: sighandler's closing, and `self.server.close()` after the loop:
   * closes the listening socket and every connection, once. A second call (a
   * second Ctrl-C) does nothing and prints nothing.
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.server.close();
    for (const channel of this.clientmap.keys()) {
      channel.close("closed by server shutdown");
    }
  }

  /**
   * book: data = receive(sock): the frames one read brought from a client
   * (its NAME first, then messages, relayed to all but their sender), or
   * null once it is gone.
   */
  #receive(channel: Channel, frames: string[] | null, bytes: number): void {
    let name = this.clientmap.get(channel);
    if (frames === null) {
      // book: else: print ("Chat server: %d hung up" ...), and the
      // `except socket.error:` that removed a broken socket.
      const why = channel.dropReason;
      channel.close();
      this.clientmap.delete(channel);
      const how = why === undefined ? "hung up" : `dropped: ${why}`;
      console.log(`Chat server: ${channel.id} ${how}`);
      let told = 0;
      if (name) {
        this.clients -= 1;
        told = this.#broadcast([`\n(Now hung up: Client from ${name})`]);
      }
      if (this.trace) {
        let notice = "never named";
        if (name) notice = `hang-up notice to ${plural(told, "client")}`;
        const end = why ?? "end of stream";
        this.trace(
          `readable: connection ${channel.id} -> ${end}, closed, ${notice}`,
        );
      }
      return;
    }
    if (channel.dropReason !== undefined) {
      this.trace?.(this.#read(channel, frames, bytes) + " -> ignored: dropped");
      return; // its end is on its way
    }
    let messages = frames;
    if (!name) {
      // book: cname = receive(client).split('NAME: ')[1], in the accept
      // branch, blocking everyone: here the name is the connection's first
      // frame, whenever it comes.
      const data = frames[0];
      if (!data.startsWith(NAME_PREFIX)) {
        this.trace?.(this.#read(channel, frames, bytes) + " -> not NAME: drop");
        channel.close("no NAME: first");
        return;
      }
      if (data.length > NAME_PREFIX.length + MAX_NAME_CHARS) {
        this.trace?.(
          this.#read(channel, frames, bytes) + " -> a long name: drop",
        );
        channel.close(`a name over ${MAX_NAME_CHARS} characters`);
        return;
      }
      channel.clearDeadline();
      const host = channel.conn.remoteAddr.hostname;
      name = `${data.slice(NAME_PREFIX.length)}@${host}`;
      this.clients += 1;
      // book: send(client, 'CLIENT: ' + str(address[0]))
      channel.sendText(`CLIENT: ${host}`);
      // book: msg = "\n(Connected: New client (%d) from %s)"; for output in
      // self.outputs: send(output, msg)
      const joined = `(Connected: New client (${this.clients}) from ${name})`;
      const told = this.#broadcast([`\n${joined}`]);
      this.clientmap.set(channel, name);
      messages = frames.slice(1);
      this.trace?.(
        this.#read(channel, frames, bytes) +
          ` -> named ${name} (${channel.wire} frames), CLIENT: sent, ` +
          `join notice to ${plural(told, "client")}`,
      );
      if (messages.length === 0) return;
    }
    // book: if data: msg = '\n#[' + self.get_client_name(sock) + ']>>' + data
    const texts = messages.map((data) => `\n#[${name}]>>${data}`);
    const told = this.#broadcast(texts, channel);
    this.trace?.(
      this.#read(channel, frames, bytes) +
        ` -> ${plural(messages.length, "message")} from ${name} relayed to ` +
        plural(told, "client"),
    );
  }

  /** How a trace line names a client event; only built when tracing. */
  #read(channel: Channel, frames: string[], bytes: number): string {
    const count = plural(frames.length, "frame");
    return `readable: connection ${channel.id} -> ${count} (${bytes} bytes), ` +
      `first ${previewText(frames[0])}`;
  }

  /**
   * book: for output in self.outputs: if output != sock: send(output, msg).
   * Sends `texts` to every named client but `except`, in one buffer each;
   * returns how many it sent them to.
   * The server encodes every frame itself, once per wire, in each
   * receiver's own wire: what a client sent is never passed on as its
   * bytes, so a book client can never be handed another client's pickle.
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

/** book: class ChatClient(object): stdin and the socket, waited on at once. */
export class ChatClient {
  constructor(
    readonly channel: Channel,
    readonly prompt: string,
    readonly trace?: Trace, // as the server's: one line per event
  ) {}

  /**
   * book: class ChatClient(object): def __init__: connect, send the name,
   * learn our address. A static async method, since a constructor cannot
   * `await`. Resolves with undefined when a signal came first (the client
   * has then said " Client interrupted. "); exits 1 when it cannot connect.
   */
  static async connect(
    name: string,
    port: number,
    wire: Wire = "json",
    trace?: Trace,
    interrupted: Promise<Deno.Signal> = new Promise(() => {}),
  ): Promise<ChatClient | undefined> {
    let channel: Channel | undefined;
    try {
      // book: self.sock = socket.socket(...); self.sock.connect((host, port))
      const connected = await beforeSignal(
        Deno.connect({ hostname: SERVER_HOST, port }),
        interrupted,
      );
      if ("signal" in connected) {
        return interruptedEarly(connected.signal, trace);
      }
      const conn = connected.value;
      console.log(`Now connected to chat server@ port ${port}`);
      channel = new Channel(conn, 0, wire);
      channel.maxFrame = 3 * MAX_FRAME_BYTES; // our text, plus a name
      // book: send(self.sock,'NAME: ' + self.name)
      channel.sendText(NAME_PREFIX + name);
      trace?.(`connected, NAME sent in ${wire} frames`);
      // book: data = receive(self.sock); addr = data.split('CLIENT: ')[1]
      const reply = await firstReply(channel, interrupted);
      if ("signal" in reply) {
        channel.close();
        return interruptedEarly(reply.signal, trace);
      }
      if (!reply.value.startsWith("CLIENT: ")) {
        throw new HandshakeError(
          `the server's first reply is not CLIENT: ${previewText(reply.value)}`,
        );
      }
      const address = reply.value.slice("CLIENT: ".length);
      trace?.(`readable: the socket -> CLIENT: ${previewText(address)}`);
      return new ChatClient(channel, `[${name}@${address}]> `, trace);
    } catch (error) {
      // book: except socket.error as e:
      channel?.close();
      if (error instanceof Deno.errors.NotCapable) {
        permissionError("connect to", port, [`--name=${name}`], wire, trace);
      }
      console.log(`Failed to connect to chat server @ port ${port}`);
      if (error instanceof HandshakeError) {
        console.error(`Error: ${error.message}`);
      }
      Deno.exit(1);
    }
  }

  /** book: def run(self): the client loop; returns when the client is done. */
  async run(...inputs: AsyncIterable<Event>[]): Promise<void> {
    // book: select.select([0, self.sock], [], [])
    const ready = select(this.channel.events(), ...inputs);
    // book: sys.stdout.write(self.prompt); sys.stdout.flush(). The prompt
    // has no newline, so not console.log (which adds one):
    // `Deno.stdout.writeSync` writes the bytes to standard output at once.
    const prompt = encoder.encode(this.prompt);
    Deno.stdout.writeSync(prompt);
    for await (const event of ready) {
      if (event.source === "stdin") {
        // book: if sock == 0:
        if (event.line === null) {
          // The end of stdin (Ctrl-D, or the end of a pipe): what was typed
          // is queued already; send it, then leave. The book went on
          // reading the socket while nothing typed could be sent any more.
          this.trace?.("readable: sys.stdin -> its end, leaving");
          console.log(" Client leaving: end of input. ");
          await this.leave();
          return;
        }
        const line = event.line.trim();
        const wire = this.channel.wire!;
        const bytes = encodeFrame(line, wire);
        const tooLong = bytes.length > HEADER_BYTES[wire] + MAX_FRAME_BYTES;
        let outcome: string;
        if (tooLong) {
          outcome = "too long, not sent";
        } else if (line) {
          outcome = `sent as a ${bytes.length}-byte frame`;
        } else {
          outcome = "empty, nothing sent"; // book: if data: send(...)
        }
        this.trace?.(
          `readable: sys.stdin -> a line ${previewText(line)} -> ${outcome}`,
        );
        if (tooLong) {
          console.log(`(not sent: over ${MAX_FRAME_BYTES} bytes)`);
        } else if (line) {
          this.channel.send(bytes);
        }
        // A last line without its newline (text typed, then Ctrl-D) leaves
        // the terminal's cursor after the text: what comes next starts on a
        // line of its own.
        if (event.cut && Deno.stdin.isTerminal()) console.log();
      } else if (event.source === "signal") {
        // book: except KeyboardInterrupt:
        this.trace?.(`signal: ${event.signal} -> interrupted`);
        console.log(" Client interrupted. ");
        break;
      } else if (event.source === "client" && event.data !== null) {
        // book: elif sock == self.sock: ... else: sys.stdout.write(data + '\n')
        this.trace?.(
          `readable: the socket -> ${plural(event.data.length, "frame")} ` +
            `(${event.bytes} bytes), first ${previewText(event.data[0])} ` +
            "-> printed",
        );
        console.log(event.data.join(`\n${this.prompt}`)); // a prompt each
      } else {
        // book: if not data: print ('Client shutting down.')
        const why = this.channel.dropReason ?? "end of stream";
        this.trace?.(`readable: the socket -> ${why}, shutting down`);
        console.log("Client shutting down.");
        break;
      }
      Deno.stdout.writeSync(prompt);
    }
    this.channel.close();
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

/**
 * book: argparse's error: usage and `FILE: error: message` on stderr, exit 2.
 */
function argumentError(message: string): never {
  console.error(`${USAGE}\n${FILE}: error: ${message}`);
  Deno.exit(2);
}

// book: if __name__ == "__main__": `import.meta.main` is true only when this
// file is the script run, not when a test imports it.
if (import.meta.main) {
  // book: parser = argparse.ArgumentParser(...); parser.parse_args()
  const args = parseArgs(Deno.args, {
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
  if (!/^\d+$/.test(args.port) || port > 65535) {
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
  // Signal listeners first: a Ctrl-C right after the ready line is ours.
  const signals = interrupts();
  // book: if name == CHAT_SERVER_NAME: server = ChatServer(port); server.run()
  if (args.name === CHAT_SERVER_NAME) {
    await new ChatServer(port, trace).run(stdinLines("server"), signals);
  } else {
    const client = await ChatClient.connect(
      args.name,
      port,
      wire,
      trace,
      signals.signalled,
    );
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
