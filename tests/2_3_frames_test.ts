// 2_3's framing, in-process and fast: both wires' frames against bytes that
// python3 wrote (checked in as hex, each with the command that made it), the
// wire detection, `takeFrame` on every cut of a frame, and a Channel reading
// frames from a fake connection that hands out the bytes in any pieces.
//
//     deno test -P tests/2_3_frames_test.ts

import { assert, assertEquals, assertThrows } from "@std/assert";
import { concat } from "@std/bytes/concat";
import {
  Channel,
  detectWire,
  encodeFrame,
  preview,
  takeFrame,
  type Wire,
} from "../2_3_chat_server_with_select.ts";

const MAX = 64 * 1024;

function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}
function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// python3 -c 'import pickle,struct,socket; b=pickle.dumps(("hi",)); print((struct.pack("L", socket.htonl(len(b)))+b).hex())'
// (64-bit Linux: "L" is 8 bytes, the big-endian length and 4 zero bytes)
const BOOK8_HI = "000000130000000080049508000000000000008c0268699485942e";
// python3 -c 'import pickle,struct,socket; b=pickle.dumps(("hi",)); print((struct.pack("=L", socket.htonl(len(b)))+b).hex())'
// ("=L" is 4 bytes, as "L" is on Windows)
const BOOK4_HI = "0000001380049508000000000000008c0268699485942e";
// python3 -c 'import pickle,struct,socket; b=pickle.dumps(("NAME: 안녕",)); print((struct.pack("L", socket.htonl(len(b)))+b).hex())'
const BOOK8_NAME =
  "0000001d0000000080049512000000000000008c0c4e414d453a20ec9588eb85959485942e";
// Our frame for ["hi"]: a 4-byte big-endian 6, then the JSON.
const JSON_HI = "000000065b226869225d";

// A pickle that runs `touch .pwned-2_3` when unpickled, as an attacker would
// send it: os.system through GLOBAL and REDUCE (protocol 2), or through
// STACK_GLOBAL and REDUCE (protocol 4). Made by
// python3 -c 'import pickle, os
// class Run:
//     def __reduce__(self): return (os.system, ("touch .pwned-2_3",))
// print(pickle.dumps((Run(),), protocol=2).hex()); print(pickle.dumps((Run(),), protocol=4).hex())'
const OS_SYSTEM_PICKLES = [
  "800263706f7369780a73797374656d0a71005810000000746f756368202e70776e65642d325f3371018571025271038571042e",
  "8004952d000000000000008c05706f736978948c0673797374656d9493948c10746f756368202e70776e65642d325f33948594529485942e",
];

/** The book's 8-byte header: the big-endian length, then 4 zero bytes. */
function book8(body: Uint8Array): Uint8Array {
  const header = new Uint8Array(8);
  new DataView(header.buffer).setUint32(0, body.length);
  return concat([header, body]);
}

/** A connection that hands out `chunks` to the reads, then the end. */
function fakeConn(chunks: Uint8Array[]): Deno.TcpConn {
  const queue = chunks.map((chunk) => chunk.slice());
  return {
    setNoDelay() {},
    close() {},
    read(buffer: Uint8Array): Promise<number | null> {
      const chunk = queue.shift();
      if (chunk === undefined) return Promise.resolve(null);
      const n = Math.min(chunk.length, buffer.length);
      buffer.set(chunk.subarray(0, n));
      if (n < chunk.length) queue.unshift(chunk.subarray(n));
      return Promise.resolve(n);
    },
  } as unknown as Deno.TcpConn;
}

/** Every text a Channel receives from those pieces, until the end. */
async function receiveAll(chunks: Uint8Array[], wire?: Wire) {
  const channel = new Channel(fakeConn(chunks), 1, wire);
  const texts: string[] = [];
  while (true) {
    const text = await channel.receive();
    if (text === null) break;
    texts.push(text);
  }
  return { texts, wire: channel.wire };
}

/** The frames the server writes are byte for byte those python3 writes for the book, and our JSON. */
Deno.test("2_3: encodeFrame writes the book's frames as python3 does, and ours", () => {
  assertEquals(toHex(encodeFrame("hi", "book8")), BOOK8_HI);
  assertEquals(toHex(encodeFrame("hi", "book4")), BOOK4_HI);
  assertEquals(toHex(encodeFrame("NAME: 안녕", "book8")), BOOK8_NAME);
  assertEquals(toHex(encodeFrame("hi", "json")), JSON_HI);
});

/** The byte after the first 4 tells the wires apart; anything else is refused. */
Deno.test("2_3: detectWire tells the three frames apart by their fifth byte", () => {
  assertEquals(detectWire(fromHex(BOOK8_HI)), "book8");
  assertEquals(detectWire(fromHex(BOOK4_HI)), "book4");
  assertEquals(detectWire(fromHex(JSON_HI)), "json");
  assertEquals(detectWire(fromHex(BOOK8_HI).subarray(0, 4)), undefined);
  // A protocol-0 pickle (Python 2's default) starts with "c" (GLOBAL here).
  assertThrows(
    () => detectWire(fromHex("0000000563706f7369")),
    Error,
    "a first frame of no known wire (byte 4 is 0x63)",
  );
});

/** Every cut of a frame asks for the rest; the whole frame gives its text and size. */
Deno.test("2_3: takeFrame needs the whole frame, and takes exactly one", () => {
  for (
    const [wire, hex] of [
      ["book8", BOOK8_HI],
      ["book4", BOOK4_HI],
      ["json", JSON_HI],
    ] as const
  ) {
    const bytes = fromHex(hex);
    for (let cut = 0; cut < bytes.length; cut++) {
      const taken = takeFrame(bytes.subarray(0, cut), wire, MAX);
      assertEquals(taken.text, undefined, `${wire} cut at ${cut}`);
      assert("need" in taken && taken.need > cut, `${wire} cut at ${cut}`);
    }
    const two = concat([bytes, encodeFrame("second", wire)]);
    assertEquals(takeFrame(two, wire, MAX), { text: "hi", size: bytes.length });
  }
});

/** Bad book frames throw: a header that is not length + 4 zeros, an oversize length, any pickle but a 1-tuple of str. */
Deno.test("2_3: takeFrame refuses bad book frames, and every pickle that would run code", () => {
  const badHeader = fromHex(BOOK8_HI);
  badHeader[7] = 1;
  assertThrows(
    () => takeFrame(badHeader, "book8", MAX),
    Error,
    "last 4 bytes are not zero",
  );
  assertThrows(
    () => takeFrame(fromHex("0001000100000000"), "book8", MAX),
    Error,
    "a 65537-byte frame, over 65536",
  );
  for (const hex of OS_SYSTEM_PICKLES) {
    const frame = book8(fromHex(hex));
    assertEquals(detectWire(frame), "book8");
    assertThrows(
      () => takeFrame(frame, "book8", MAX),
      Error,
      "a book frame that is not a pickled text: pickle opcode",
    );
  }
  // A list, not a tuple: python3 -c 'import pickle; print(pickle.dumps(["hi"]).hex())'
  const list = book8(fromHex("80049509000000000000005d948c02686994612e"));
  assertThrows(() => takeFrame(list, "book8", MAX), Error, "not a pickled");
  // Our JSON wire refuses what is not an array of one text.
  const object = fromHex("0000000c7b224e414d45223a2278227d"); // {"NAME":"x"}
  assertThrows(() => takeFrame(object, "json", MAX), Error, "not a JSON array");
});

/** A book frame split at every byte boundary, or read a byte at a time, arrives whole, and the wire is learnt from it. */
Deno.test("2_3: a Channel reads a book frame split anywhere whole", async () => {
  const frame = fromHex(BOOK8_NAME);
  for (let cut = 1; cut < frame.length; cut++) {
    const got = await receiveAll([frame.subarray(0, cut), frame.subarray(cut)]);
    assertEquals(got, { texts: ["NAME: 안녕"], wire: "book8" }, `cut ${cut}`);
  }
  const bytes = [...frame].map((byte) => new Uint8Array([byte]));
  assertEquals((await receiveAll(bytes)).texts, ["NAME: 안녕"]);
});

/** Frames longer than the idle buffer, and many frames in one read, come out whole and one at a time. */
Deno.test("2_3: a Channel grows for a long frame and takes many frames from one read", async () => {
  const long = "가".repeat(20_000); // 60,000 bytes of UTF-8
  const texts = ["NAME: x", long, "short", long, ...Array(50).fill("burst")];
  for (const wire of ["json", "book8", "book4"] as const) {
    const all = concat(texts.map((text) => encodeFrame(text, wire)));
    // The whole stream in one piece, and in 1,000-byte pieces.
    assertEquals((await receiveAll([all])).texts, texts, wire);
    const pieces = [];
    for (let at = 0; at < all.length; at += 1000) {
      pieces.push(all.subarray(at, at + 1000));
    }
    assertEquals(await receiveAll(pieces), { texts, wire }, `${wire} pieces`);
  }
});

/** The end of the stream inside a frame is an error, not a message. */
Deno.test("2_3: a Channel refuses a frame cut short by the end", async () => {
  const frame = fromHex(BOOK8_HI);
  const channel = new Channel(fakeConn([frame.subarray(0, 10)]), 1);
  const error = await channel.receive().catch((error) => error);
  assert(error instanceof Error && /hung up mid-frame/.test(error.message));
});

/** A trace shows client data as at most 32 bytes, in quotes: printable UTF-8 (Korean too) as text; control bytes, invalid UTF-8, quotes and backslashes escaped. */
Deno.test("2_3: preview shows 32 bytes at most: printable UTF-8 as text, the rest escaped", () => {
  const bytes = (text: string) => new TextEncoder().encode(text);
  const hex = (...list: number[]) => Uint8Array.from(list);
  assertEquals(preview(bytes("hi")), '"hi"');
  assertEquals(preview(bytes('a"b\\c\n')), '"a\\x22b\\x5cc\\x0a"');
  assertEquals(preview(bytes("NAME: 김철수")), '"NAME: 김철수"');
  assertEquals(preview(bytes("é 👋")), '"é 👋"');
  // Controls (C0, DEL, C1), a format character, a line separator: escaped.
  assertEquals(preview(bytes("\t\x7f\u0085")), '"\\x09\\x7f\\xc2\\x85"');
  assertEquals(
    preview(bytes("a\u200bb\u2028")),
    '"a\\xe2\\x80\\x8bb\\xe2\\x80\\xa8"',
  );
  // Not UTF-8: a lone continuation byte, a cut sequence, an overlong "/", a
  // surrogate, 0xff.
  assertEquals(preview(hex(0x80, 0x41)), '"\\x80A"');
  assertEquals(preview(hex(0xed, 0x95)), '"\\xed\\x95"');
  assertEquals(preview(hex(0xc0, 0xaf)), '"\\xc0\\xaf"');
  assertEquals(preview(hex(0xed, 0xa0, 0x80)), '"\\xed\\xa0\\x80"');
  assertEquals(preview(hex(0xff, 0x68, 0x69)), '"\\xffhi"');
  assertEquals(preview(bytes("x".repeat(32))), `"${"x".repeat(32)}"`);
  assertEquals(preview(bytes("x".repeat(33))), `"${"x".repeat(32)}..."`);
  // 31 bytes, then a character of 3 that would be cut: left for the "...".
  assertEquals(preview(bytes("x".repeat(31) + "한")), `"${"x".repeat(31)}..."`);
  assertEquals(preview(bytes("x".repeat(29) + "한")), `"${"x".repeat(29)}한"`);
});
