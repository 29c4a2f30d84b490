/**
 * In-process unit tests of recipe 2_4's pure functions: where a request head
 * ends (`headEnd`) and how `--trace` shows client bytes (`preview`). They
 * import the recipe as a module (its server starts only when it is the main
 * module), so they need no process, socket or port.
 */
import { assertEquals } from "@std/assert";
import { headEnd, preview } from "../2_4_simple_web_server_with_epoll.ts";

const bytes = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));

/** EOL1 "\n\n" and EOL2 "\n\r\n" both end a head, just past them. */
Deno.test("2_4 headEnd: just past EOL1 or EOL2", () => {
  assertEquals(headEnd(bytes("GET / HTTP/1.0\n\n")), 16);
  assertEquals(headEnd(bytes("GET / HTTP/1.0\r\n\r\n")), 18);
  assertEquals(headEnd(bytes("GET / HTTP/1.0\r\nHost: x\r\n\r\n")), 27);
});

/** What follows the head (a body, a second request) is not part of it. */
Deno.test("2_4 headEnd: the first end counts, not what follows", () => {
  assertEquals(headEnd(bytes("GET /a HTTP/1.0\n\nGET /b HTTP/1.0\n\n")), 17);
  assertEquals(headEnd(bytes("POST / HTTP/1.0\r\n\r\nbody\n\n")), 19);
});

/** A head not ended yet, or ended only by "\r\n\r" so far, is -1. */
Deno.test("2_4 headEnd: -1 until the head has ended", () => {
  assertEquals(headEnd(bytes("")), -1);
  assertEquals(headEnd(bytes("GET / HTTP/1.0")), -1);
  assertEquals(headEnd(bytes("GET / HTTP/1.0\r\n")), -1);
  assertEquals(headEnd(bytes("GET / HTTP/1.0\r\n\r")), -1);
  assertEquals(headEnd(bytes("GET / HTTP/1.0\r\r")), -1); // no LF at all
  assertEquals(headEnd(bytes("\n")), -1);
});

/** `from` skips what was searched before, but an EOL split over reads is found. */
Deno.test("2_4 headEnd: a search from the last two bytes of the old part", () => {
  const head = bytes("GET / HTTP/1.0\r\nX: y\r\n\r\n");
  // Every split of the head into an old part and a new piece: searching
  // from two bytes before the new piece finds the same end.
  for (let old = 0; old < head.length; old++) {
    assertEquals(headEnd(head, Math.max(old - 2, 0)), head.length, `${old}`);
  }
  // And `from` past an early end does skip it.
  assertEquals(headEnd(bytes("\n\nabc\n\n"), 2), 7);
});

/** Client data in a trace line: 32 bytes at most, escaped, in quotes. */
Deno.test("2_4 preview: escaped, quoted, cut at 32 bytes", () => {
  assertEquals(
    preview(bytes("GET / HTTP/1.0\r\n")),
    '"GET / HTTP/1.0\\x0d\\x0a"',
  );
  assertEquals(preview(bytes('a"b\\c\x1b\xff')), '"a\\x22b\\x5cc\\x1b\\xff"');
  assertEquals(preview(bytes("x".repeat(32))), `"${"x".repeat(32)}"`);
  assertEquals(preview(bytes("x".repeat(33))), `"${"x".repeat(32)}..."`);
  assertEquals(preview(new Uint8Array(0)), '""');
});

/** Valid, printable UTF-8 (Korean, an accent) is shown as text. */
Deno.test("2_4 preview: printable UTF-8 as text", () => {
  const utf8 = (text: string) => new TextEncoder().encode(text);
  assertEquals(preview(utf8("NAME: 김철수")), '"NAME: 김철수"');
  assertEquals(preview(utf8("café\r\n")), '"café\\x0d\\x0a"');
  // A character the 32-byte cut would split is left out whole, then "...".
  assertEquals(preview(utf8("x".repeat(31) + "김")), `"${"x".repeat(31)}..."`);
  assertEquals(preview(utf8("x".repeat(29) + "김")), `"${"x".repeat(29)}김"`);
});

/** Invalid UTF-8 and non-printing characters stay escaped, byte by byte. */
Deno.test("2_4 preview: invalid UTF-8, C1 controls and format characters escaped", () => {
  // A lone continuation byte, a lead byte without its continuation, an
  // overlong "/" (C0 AF), a UTF-16 surrogate encoded in UTF-8 (ED A0 80).
  assertEquals(
    preview(bytes("\x80 \xc3( \xc0\xaf \xed\xa0\x80")),
    '"\\x80 \\xc3( \\xc0\\xaf \\xed\\xa0\\x80"',
  );
  // U+0085 (a C1 control, C2 85) and U+202E (right-to-left override, E2 80 AE).
  assertEquals(
    preview(bytes("\xc2\x85\xe2\x80\xae")),
    '"\\xc2\\x85\\xe2\\x80\\xae"',
  );
  // A truncated sequence at the very end of what was read.
  assertEquals(preview(bytes("ok\xea\xb9")), '"ok\\xea\\xb9"');
});
