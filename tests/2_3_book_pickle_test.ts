// Tests for 2_3's strict codec of the book frame's pickle, against bytes that
// python3 (3.11.7) wrote.
//
// Every fixture is hex that python3 printed; the comment above it is the
// command that made it (`.hex()` of the bytes). They need no permissions:
// `deno test tests/2_3_book_pickle_test.ts`; with `-P` (python3 may run) one
// more test compares the encoder with a live python3.

import {
  BookPickleError,
  decodeBookPickle,
  encodeBookPickle,
} from "../2_3_chat_server_with_select.ts";

// A few assertions written out, so that this file needs no imports beyond the
// module it tests.
function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
function assertEquals<T>(actual: T, expected: T, what: string): void {
  assert(
    actual === expected,
    `${what}: got ${JSON.stringify(actual)}, want ${JSON.stringify(expected)}`,
  );
}
function assertBytesEqual(
  actual: Uint8Array,
  expected: Uint8Array,
  what: string,
): void {
  assertEquals(toHex(actual), toHex(expected), what);
}
// Calls `decodeBookPickle(payload)` and checks it throws a BookPickleError
// whose message contains every one of `needles`. Returns the message.
function assertRefused(
  payload: Uint8Array,
  needles: string[],
  what: string,
): string {
  let decoded: string | undefined;
  try {
    decoded = decodeBookPickle(payload);
  } catch (error) {
    assert(
      error instanceof BookPickleError,
      `${what}: threw ${error}, want a BookPickleError`,
    );
    assert(
      !error.message.includes("\n"),
      `${what}: message is not one line: ${error.message}`,
    );
    for (const needle of needles) {
      assert(
        error.message.includes(needle),
        `${what}: message "${error.message}" lacks "${needle}"`,
      );
    }
    return error.message;
  }
  throw new Error(
    `assertion failed: ${what}: decoded to ${
      JSON.stringify(decoded)
    }, want a refusal`,
  );
}

function fromHex(hex: string): Uint8Array {
  assert(
    /^([0-9a-f]{2})*$/.test(hex),
    `bad hex in a fixture: ${hex.slice(0, 40)}`,
  );
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}
function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join(
    "",
  );
}
async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return toHex(
    new Uint8Array(await crypto.subtle.digest("SHA-256", bytes.slice())),
  );
}

// --- Fixtures: what python3 writes for a 1-tuple of one str
// ------------------------------------

const HI_BY_PROTOCOL: [number, string][] = [
  // python3 -c 'import pickle; print(pickle.dumps(("hi",), protocol=2).hex())'
  [2, "80025802000000686971008571012e"],
  // python3 -c 'import pickle; print(pickle.dumps(("hi",), protocol=3).hex())'
  [3, "80035802000000686971008571012e"],
  // python3 -c 'import pickle; print(pickle.dumps(("hi",), protocol=4).hex())'
  [4, "80049508000000000000008c0268699485942e"],
  // python3 -c 'import pickle; print(pickle.dumps(("hi",), protocol=5).hex())'
  [5, "80059508000000000000008c0268699485942e"],
];

const KOREAN = "안녕하세요 🙂";

// [text, python's hex, the command]: each decodes to the text.
const DECODE_FIXTURES: [string, string][] = [
  // python3 -c 'import pickle; print(pickle.dumps(("",), protocol=2).hex())'
  ["", "8002580000000071008571012e"],
  // python3 -c 'import pickle; print(pickle.dumps(("",)).hex())'
  ["", "80049506000000000000008c009485942e"],
  // python3 -c 'import pickle; print(pickle.dumps(("안녕하세요 🙂",), protocol=3).hex())'
  [
    KOREAN,
    "80035814000000ec9588eb8595ed9598ec84b8ec9a9420f09f998271008571012e",
  ],
  // python3 -c 'import pickle; print(pickle.dumps(("x"*300,), protocol=2).hex())'
  // is "8002582c010000", then "78" (x) 300 times, then "71008571012e".
  ["x".repeat(300), "8002582c010000" + "78".repeat(300) + "71008571012e"],
];

// [text, python's protocol-4 hex]: the encoder must write exactly these bytes.
const ENCODE_FIXTURES: [string, string][] = [
  // python3 -c 'import pickle; print(pickle.dumps(("",)).hex())'
  ["", "80049506000000000000008c009485942e"],
  // python3 -c 'import pickle; print(pickle.dumps(("hi",)).hex())'
  ["hi", "80049508000000000000008c0268699485942e"],
  // python3 -c 'import pickle; print(pickle.dumps(("a",)).hex())'
  ["a", "80049507000000000000008c01619485942e"],
  // python3 -c 'import pickle; print(pickle.dumps(("안녕하세요 🙂",)).hex())'
  [
    KOREAN,
    "8004951a000000000000008c14ec9588eb8595ed9598ec84b8ec9a9420f09f99829485942e",
  ],
  // python3 -c 'import pickle; print(pickle.dumps(("x"*255,)).hex())'
  // is "80049505010000000000008cff", then "78" 255 times, then "9485942e"
  // (SHORT_BINUNICODE).
  [
    "x".repeat(255),
    "80049505010000000000008cff" + "78".repeat(255) + "9485942e",
  ],
  // python3 -c 'import pickle; print(pickle.dumps(("x"*256,)).hex())'
  // is "80049509010000000000005800010000", then "78" 256 times, then "9485942e"
  // (BINUNICODE).
  [
    "x".repeat(256),
    "80049509010000000000005800010000" + "78".repeat(256) + "9485942e",
  ],
];

// Texts of 64 KiB or more, which Python writes outside a frame. The fixtures
// are too long to check in, so the test checks the encoder's output against the
// SHA-256 of python3's bytes:
//   python3 -c 'import pickle, hashlib; b = pickle.dumps((TEXT,));
//     print(len(b), hashlib.sha256(b).hexdigest())'
const LONG_FIXTURES: {
  text: string;
  python: string;
  length: number;
  sha256: string;
}[] = [
  {
    text: "x".repeat(65535),
    python: '"x"*65535',
    length: 65555,
    sha256: "900e53605a71fdbc5fe62865756f3e2c94e075da6b8ab0784c492229346a200b",
  },
  {
    text: "x".repeat(65536),
    python: '"x"*65536',
    length: 65556,
    sha256: "fcc407e6a37ae8486e699ef721cf88bd3c47e0256fc9762fc58aa335fe26ad52",
  },
  {
    text: "x".repeat(70000),
    python: '"x"*70000',
    length: 70020,
    sha256: "251973aae6b116d3bdb80f0bb3c8e5ccf047c28841c849cb1608ad856a53a379",
  },
  {
    text: "ab가🙂".repeat(7500),
    python: '"ab가🙂"*7500',
    length: 67520,
    sha256: "3f0c35144ad31cc5e01b058b5b8e6e23955635536b4e53da4d9f1f0c3a70fc19",
  },
];

// --- Decoding what Python writes
// ---------------------------------------------------------------

/** Each protocol from 2 to 5, as python3 writes ("hi",), decodes to "hi". */
Deno.test("2_3: decodeBookPickle reads python3's protocols 2, 3, 4 and 5", () => {
  for (const [protocol, hex] of HI_BY_PROTOCOL) {
    assertEquals(decodeBookPickle(fromHex(hex)), "hi", `protocol ${protocol}`);
  }
});

/** Empty, Korean and emoji, and 255- to 300-byte texts decode exactly. */
Deno.test("2_3: decodeBookPickle reads empty, non-ASCII and long texts", () => {
  for (const [text, hex] of [...DECODE_FIXTURES, ...ENCODE_FIXTURES]) {
    assertEquals(
      decodeBookPickle(fromHex(hex)),
      text,
      `fixture ${hex.slice(0, 40)}...`,
    );
  }
});

/** A payload that is a view into a larger buffer decodes from its offset. */
Deno.test("2_3: decodeBookPickle reads a view into a larger buffer", () => {
  const hi = fromHex(HI_BY_PROTOCOL[2][1]);
  const buffer = new Uint8Array(hi.length + 10).fill(0x63); // GLOBAL bytes
  buffer.set(hi, 5);
  assertEquals(
    decodeBookPickle(buffer.subarray(5, 5 + hi.length)),
    "hi",
    "subarray payload",
  );
});

// --- Encoding exactly what Python writes
// -------------------------------------------------------

/** The encoder writes python3's protocol-4 bytes for short texts. */
Deno.test("2_3: encodeBookPickle writes python3's protocol-4 bytes", () => {
  for (const [text, hex] of ENCODE_FIXTURES) {
    assertBytesEqual(
      encodeBookPickle(text),
      fromHex(hex),
      `text of ${text.length} chars`,
    );
  }
});

/** From 64 KiB on, the encoder writes python3's unframed-text form. */
Deno.test("2_3: encodeBookPickle writes python3's bytes near and over 64 KiB", async () => {
  for (const { text, python, length, sha256 } of LONG_FIXTURES) {
    const encoded = encodeBookPickle(text);
    assertEquals(encoded.length, length, `length for ${python}`);
    assertEquals(await sha256Hex(encoded), sha256, `SHA-256 for ${python}`);
    assertEquals(decodeBookPickle(encoded), text, `round trip for ${python}`);
  }
  // The form itself, spelled out for "x"*70000: PROTO 4, BINUNICODE with length
  // 70000 (0x00011170), the text, FRAME 4, MEMOIZE, TUPLE1, MEMOIZE, STOP.
  const encoded = encodeBookPickle("x".repeat(70000));
  assertEquals(
    toHex(encoded.subarray(0, 8)),
    "8004587011010078",
    "head of the 70,000-byte form",
  );
  assertEquals(
    toHex(encoded.subarray(-14)),
    "789504000000000000009485942e",
    "tail of the 70,000-byte form",
  );
});

/** Every text decodes back to itself; a lone surrogate becomes U+FFFD. */
Deno.test("2_3: decodeBookPickle(encodeBookPickle(text)) is the text", () => {
  for (
    const text of [
      "",
      "hi",
      KOREAN,
      "x".repeat(255),
      "한".repeat(100),
      "\u0000\n.",
    ]
  ) {
    assertEquals(
      decodeBookPickle(encodeBookPickle(text)),
      text,
      `round trip of ${JSON.stringify(text)}`,
    );
  }
  assertEquals(
    decodeBookPickle(encodeBookPickle("a\ud800b")),
    "a\ufffdb",
    "lone surrogate",
  );
});

/** With python3 allowed to run, the encoder matches it live. */
Deno.test({
  name: "2_3: encodeBookPickle matches a live python3",
  ignore:
    Deno.permissions.querySync({ name: "run", command: "python3" }).state !==
      "granted",
  fn: async () => {
    const texts = [
      "",
      "hi",
      KOREAN,
      "x".repeat(255),
      "x".repeat(256),
      "가".repeat(21845),
      "가".repeat(21846),
    ];
    const script = "import pickle, sys, json\n" +
      "for text in json.load(sys.stdin): print(pickle.dumps((text,)).hex())";
    const child = new Deno.Command("python3", {
      args: ["-c", script],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(JSON.stringify(texts)));
    await writer.close();
    const output = await child.output();
    assert(output.success, "python3 failed");
    const lines = new TextDecoder().decode(output.stdout).trim().split("\n");
    assertEquals(lines.length, texts.length, "one line per text");
    texts.forEach((text, i) =>
      assertEquals(toHex(encodeBookPickle(text)), lines[i], `text ${i}`)
    );
  },
});

// --- Refusing everything else
// ------------------------------------------------------------------

// [what python3 pickled, its hex, words the error must contain].
const REFUSED: [string, string, string[]][] = [
  // python3 -c 'import pickle; print(pickle.dumps(("a","b")).hex())'
  ['("a", "b")', "8004950b000000000000008c0161948c01629486942e", [
    "0x8c (SHORT_BINUNICODE) at byte 15",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps(("hi", 1)).hex())'
  ['("hi", 1)', "8004950a000000000000008c026869944b0186942e", [
    "0x4b (BININT1) at byte 16",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps((("hi",),)).hex())'
  ['(("hi",),)', "8004950a000000000000008c02686994859485942e", [
    "0x85 (TUPLE1) at byte 18",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps(()).hex())'
  ["()", "8004292e", ["0x29 (EMPTY_TUPLE) at byte 2"]],
  // python3 -c 'import pickle; print(pickle.dumps(["a"]).hex())'
  ['["a"]', "80049508000000000000005d948c016194612e", [
    "0x5d (EMPTY_LIST) at byte 11",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps((b"a",)).hex())'
  ['(b"a",) protocol 4', "80049507000000000000004301619485942e", [
    "0x43 (SHORT_BINBYTES) at byte 11",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps((b"a",), protocol=3).hex())'
  ['(b"a",) protocol 3', "800343016171008571012e", [
    "0x43 (SHORT_BINBYTES) at byte 2",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps((b"a",), protocol=2).hex())'
  // (protocol 2 has no bytes opcode: Python writes GLOBAL _codecs.encode and
  // REDUCE)
  [
    '(b"a",) protocol 2',
    "8002635f636f646563730a656e636f64650a7100580100000061710158060000006c6174696e3171028671035271048571052e",
    ["0x63 (GLOBAL) at byte 2"],
  ],
  // python3 -c 'import pickle; print(pickle.dumps(("a",), protocol=0).hex())'
  ['("a",) protocol 0', "2856610a70300a7470310a2e", [
    "0x28 (MARK) at byte 0",
    "protocol 0 and 1",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps(("a",), protocol=1).hex())'
  ['("a",) protocol 1', "2858010000006171007471012e", [
    "0x28 (MARK) at byte 0",
    "protocol 0 and 1",
  ]],
  // python3 -c 'import pickle; print(pickle.dumps(("\ud800",)).hex())'
  // (Python writes a lone surrogate with "surrogatepass": ED A0 80 is not
  // UTF-8)
  ['("\\ud800",)', "80049509000000000000008c03eda0809485942e", [
    "SHORT_BINUNICODE at byte 11",
    "not valid UTF-8",
  ]],
];

// A pickle that runs `os.system("echo pwned")` in whoever unpickles it, made
// with
//   python3 -c 'import os, pickle
//   class Evil:
//       def __reduce__(self): return (os.system, ("echo pwned",))
//   print(pickle.dumps((Evil(),), protocol=P).hex())'
// for P = 0, 2 and 4 (protocol 0 without the tuple: `pickle.dumps(Evil(),
// protocol=0)`).
const OS_SYSTEM: [string, string, string[]][] = [
  [
    "os.system protocol 0",
    "63706f7369780a73797374656d0a70300a28566563686f2070776e65640a70310a7470320a5270330a2e",
    ["0x63 (GLOBAL) at byte 0"],
  ],
  [
    "os.system protocol 2",
    "800263706f7369780a73797374656d0a7100580a0000006563686f2070776e656471018571025271038571042e",
    ["0x63 (GLOBAL) at byte 2"],
  ],
  [
    // SHORT_BINUNICODE "posix", MEMOIZE, SHORT_BINUNICODE "system", MEMOIZE,
    // STACK_GLOBAL, ...: the reader stops at the second string, where only
    // TUPLE1 may come, before STACK_GLOBAL.
    "os.system protocol 4",
    "80049527000000000000008c05706f736978948c0673797374656d9493948c0a6563686f2070776e6564948594529485942e",
    ["0x8c (SHORT_BINUNICODE) at byte 19"],
  ],
];

/** Other values, and protocols 0 and 1, are refused naming what they hold. */
Deno.test("2_3: decodeBookPickle refuses other values and protocols 0 and 1", () => {
  for (const [what, hex, needles] of REFUSED) {
    assertRefused(fromHex(hex), needles, what);
  }
});

/** A pickle that would call os.system is refused at its first odd byte. */
Deno.test("2_3: decodeBookPickle refuses a pickle that calls os.system", () => {
  for (const [what, hex, needles] of OS_SYSTEM) {
    assertRefused(fromHex(hex), needles, what);
  }
});

/** The dangerous opcodes, where the text belongs, are refused by name. */
Deno.test("2_3: decodeBookPickle names GLOBAL, REDUCE, INST, OBJ and more", () => {
  const cases: [number, string][] = [
    [0x63, "GLOBAL"],
    [0x93, "STACK_GLOBAL"],
    [0x52, "REDUCE"],
    [0x69, "INST"],
    [0x6f, "OBJ"],
    [0x42, "BINBYTES"],
    [0x43, "SHORT_BINBYTES"],
    [0x8e, "BINBYTES8"],
    [0xff, "not a pickle opcode"],
  ];
  for (const [opcode, name] of cases) {
    const hex = opcode.toString(16).padStart(2, "0");
    // PROTO 2, then the opcode where SHORT_BINUNICODE/BINUNICODE/BINUNICODE8
    // must be.
    assertRefused(new Uint8Array([0x80, 0x02, opcode, 0x2e]), [
      `opcode 0x${hex} (${name}) at byte 2`,
    ], name);
  }
});

/** Every prefix of a valid payload is refused, never read as part of a text. */
Deno.test("2_3: decodeBookPickle refuses every truncation", () => {
  const payloads = [
    ...HI_BY_PROTOCOL.map(([, hex]) => fromHex(hex)),
    fromHex(ENCODE_FIXTURES[3][1]),
    fromHex(ENCODE_FIXTURES[5][1]),
    encodeBookPickle("y".repeat(65536)),
  ];
  for (const payload of payloads) {
    // For the 64 KiB payload, every cut in the headers and the tail, and a
    // sample in the text.
    const cuts = payload.length < 1000
      ? Array.from({ length: payload.length }, (_, i) => i)
      : [
        ...Array(20).keys(),
        1000,
        30000,
        ...Array.from({ length: 20 }, (_, i) => payload.length - 20 + i),
      ];
    for (const cut of cuts) {
      assertRefused(
        payload.subarray(0, cut),
        [],
        `prefix of ${cut} of ${payload.length} bytes`,
      );
    }
  }
  assertRefused(
    new Uint8Array(0),
    ["pickle ends at byte 0", "expected PROTO"],
    "empty payload",
  );
  assertRefused(fromHex("800258050000"), [
    "inside the 4-byte argument of BINUNICODE at byte 2",
  ], "cut length");
  assertRefused(fromHex("80025802000000"), [
    "BINUNICODE at byte 2 declares 2 bytes",
    "only 0 bytes follow",
  ], "cut text");
});

/** Anything after STOP, even a second valid pickle, is refused. */
Deno.test("2_3: decodeBookPickle refuses bytes after STOP", () => {
  const hi = fromHex(HI_BY_PROTOCOL[0][1]);
  assertRefused(fromHex(HI_BY_PROTOCOL[0][1] + "00"), [
    "1 bytes after STOP at byte 14",
  ], "one byte");
  assertRefused(fromHex(HI_BY_PROTOCOL[0][1] + HI_BY_PROTOCOL[0][1]), [
    `${hi.length} bytes after STOP`,
  ], "two pickles");
  // In protocol 4 the frame length covers the bytes, so an extra byte breaks
  // the FRAME check first.
  assertRefused(fromHex(HI_BY_PROTOCOL[2][1] + "2e"), [
    "FRAME at byte 2 declares 8 bytes but 9 bytes follow",
  ], "framed");
});

/** A length past the end of the payload is refused before any read. */
Deno.test("2_3: decodeBookPickle refuses declared lengths past the end", () => {
  // BINUNICODE declaring 4 GiB - 1 bytes, with 4 bytes after it.
  assertRefused(fromHex("8002" + "58ffffffff" + "6869852e"), [
    "declares 4294967295 bytes",
    "only 4 bytes",
  ], "BINUNICODE");
  // BINUNICODE8 declaring 2^64 - 1 bytes.
  assertRefused(fromHex("8004" + "8d" + "ff".repeat(8) + "6869852e"), [
    "declares 18446744073709551615",
  ], "BINUNICODE8");
  // SHORT_BINUNICODE declaring 255 bytes.
  assertRefused(fromHex("8004" + "8cff" + "6869852e"), [
    "declares 255 bytes",
    "only 4 bytes",
  ], "SHORT_BINUNICODE");
  // FRAME declaring 2^64 - 1, and one byte fewer than follow.
  assertRefused(fromHex("8004" + "95" + "ff".repeat(8) + "8c026869852e"), [
    "FRAME at byte 2 declares",
  ], "huge FRAME");
  assertRefused(fromHex("8004" + "950500000000000000" + "8c026869852e"), [
    "declares 5 bytes but 6",
  ], "short FRAME");
});

/** The grammar's optional forms are accepted, and nothing more. */
Deno.test("2_3: decodeBookPickle accepts the optional forms, nothing more", () => {
  // Hand-made from the grammar: BINUNICODE8 "hi", LONG_BINPUT 0, TUPLE1, BINPUT
  // 1, STOP.
  assertEquals(
    decodeBookPickle(
      fromHex(
        "8004" + "8d0200000000000000" + "6869" + "7200000000" + "85" + "7101" +
          "2e",
      ),
    ),
    "hi",
    "BINUNICODE8",
  );
  // Memo indexes other than the next entry (0, then 1) are refused.
  assertRefused(
    fromHex("80025802000000686971058571012e"),
    ["BINPUT at byte 9 stores memo entry 5", "Python writes entry 0"],
    "BINPUT 5",
  );
  // (LONG_BINPUT's argument 85 71 01 00 is 0x00017185 = 94597, little-endian.)
  assertRefused(
    fromHex("8002580200000068697100857285710100" + "2e"),
    ["LONG_BINPUT at byte 12 stores memo entry 94597"],
    "huge LONG_BINPUT",
  );
  // No memo opcodes at all.
  assertEquals(
    decodeBookPickle(fromHex("80048c026869852e")),
    "hi",
    "no MEMOIZE",
  );
  // A frame is refused before protocol 4, and a second frame inside the first
  // is refused.
  assertRefused(fromHex("8003950700000000000000" + "8c026869852e"), [
    "not allowed in protocol 3",
  ], "FRAME in protocol 3");
  assertRefused(
    fromHex(
      "8004950f00000000000000" + "8c026869" + "950300000000000000" + "852e",
    ),
    ["FRAME at byte 15", "inside the frame before it"],
    "nested FRAME",
  );
  // Two memo opcodes in a row, and a BINGET (a memo read), are not what Python
  // writes.
  assertRefused(
    fromHex("80028c0268699494852e"),
    ["0x94 (MEMOIZE) at byte 7"],
    "two MEMOIZE",
  );
  assertRefused(fromHex("80028c02686971006800852e"), [
    "0x68 (BINGET) at byte 8",
  ], "BINGET");
  // PROTO with protocols 0, 1 and 6.
  for (const protocol of [0, 1, 6]) {
    assertRefused(new Uint8Array([0x80, protocol, 0x8c, 0, 0x85, 0x2e]), [
      `pickle protocol ${protocol}`,
    ], `PROTO ${protocol}`);
  }
  // Invalid UTF-8: a lone continuation byte, and an overlong "/".
  assertRefused(
    fromHex("80048c0180852e"),
    ["not valid UTF-8"],
    "continuation byte",
  );
  assertRefused(fromHex("80048c02c0af852e"), ["not valid UTF-8"], "overlong");
});
