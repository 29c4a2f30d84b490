/**
 * In-process unit tests of 2_5's framing and trace preview: where a line ends
 * (`lineEnd`, diesel's `until_eol()` apart from any I/O) and how `--trace`
 * shows client bytes (`preview`). No process, no socket: fast, and each case
 * names the rule it checks.
 */
import { assert, assertEquals } from "@std/assert";
import {
  DieselConnection,
  hostPort,
  lineEnd,
  preview,
} from "../2_5_echo_server_with_diesel.ts";
import { addressCases, previewCases } from "./harness.ts";

const encoder = new TextEncoder();
const bytes = (text: string) => encoder.encode(text);

/** "\n" (nc) and "\r\n" (telnet) both end a line; the end is just past the "\n". */
Deno.test("2_5 lineEnd: LF and CRLF end a line, terminator included", () => {
  assertEquals(lineEnd(bytes("Hello\n")), { kind: "line", end: 6 });
  assertEquals(lineEnd(bytes("Hello\r\nmore")), { kind: "line", end: 7 });
  assertEquals(lineEnd(bytes("\n")), { kind: "line", end: 1 });
});

/** Without a "\n" yet the line is partial, even when it ends in half a "\r\n". */
Deno.test("2_5 lineEnd: no newline yet is partial", () => {
  assertEquals(lineEnd(bytes("")), { kind: "partial" });
  assertEquals(lineEnd(bytes("Hello")), { kind: "partial" });
  assertEquals(lineEnd(bytes("Hello\r")), { kind: "partial" });
});

/** Only the first line counts: what follows it waits for the next call. */
Deno.test("2_5 lineEnd: the first of several lines", () => {
  assertEquals(lineEnd(bytes("one\ntwo\n")), { kind: "line", end: 4 });
});

/** The limit counts the line without its terminator: exactly the limit passes, one byte more does not. */
Deno.test("2_5 lineEnd: the limit, terminator not counted", () => {
  assertEquals(lineEnd(bytes("abcd\r\n"), 4), { kind: "line", end: 6 });
  assertEquals(lineEnd(bytes("abcd\n"), 4), { kind: "line", end: 5 });
  assertEquals(lineEnd(bytes("abcde\n"), 4), { kind: "too long" });
  // Partial lines too: more than the limit without a newline is already too long,
  // but a trailing "\r" may still be half of the terminator.
  assertEquals(lineEnd(bytes("abcd\r"), 4), { kind: "partial" });
  assertEquals(lineEnd(bytes("abcde"), 4), { kind: "too long" });
});

/** `searchFrom` skips bytes already searched; the line still starts at 0. */
Deno.test("2_5 lineEnd: searchFrom", () => {
  assertEquals(lineEnd(bytes("abc\ndef\n"), 64, 4), { kind: "line", end: 8 });
  assertEquals(lineEnd(bytes("abcdef"), 64, 3), { kind: "partial" });
});

/** A trace shows printable ASCII as it is, everything else (and `"` and `\`) as \xNN. */
Deno.test("2_5 preview: escapes", () => {
  assertEquals(preview(bytes("Hello\r\n")), '"Hello\\x0d\\x0a"');
  assertEquals(preview(bytes('say "hi" \\')), '"say \\x22hi\\x22 \\x5c"');
  assertEquals(preview(new Uint8Array([0xc3])), '"\\xc3"'); // half an "é"
  assertEquals(preview(new Uint8Array([0, 0x7f, 0xff])), '"\\x00\\x7f\\xff"');
});

/** At most 32 bytes of client data, then "..." when there was more; parts read as one. */
Deno.test("2_5 preview: printable UTF-8 as text, the rest escaped", () => {
  assertEquals(preview(bytes("é")), '"é"');
  assertEquals(preview(bytes("NAME: 김철수")), '"NAME: 김철수"');
  assertEquals(preview(bytes("안녕\r\n")), '"안녕\\x0d\\x0a"');
  // A C1 control (U+0085) and a format character (U+200B) are escaped.
  assertEquals(preview(bytes("\u0085\u200b")), '"\\xc2\\x85\\xe2\\x80\\x8b"');
  // Invalid UTF-8: a stray continuation byte, an overlong "/", a surrogate.
  assertEquals(preview(new Uint8Array([0x80, 0x41])), '"\\x80A"');
  assertEquals(preview(new Uint8Array([0xc0, 0xaf])), '"\\xc0\\xaf"');
  assertEquals(
    preview(new Uint8Array([0xed, 0xa0, 0x80])),
    '"\\xed\\xa0\\x80"',
  );
  // A character cut by the 32-byte limit is left to the "...", as in the
  // other recipes.
  assertEquals(
    preview(bytes("x".repeat(31) + "김")),
    `"${"x".repeat(31)}..."`,
  );
  for (const [data, shown] of previewCases()) {
    assertEquals(preview(data), shown);
  }
  // A character split across the parts is still one character.
  const kim = bytes("김");
  assertEquals(preview(kim.subarray(0, 1), kim.subarray(1)), '"김"');
});

Deno.test("2_5 hostPort: an IPv6 address in brackets, IPv4 as the book", () => {
  for (const [host, text] of addressCases()) {
    assertEquals(hostPort(host, 8800), text);
  }
  assertEquals(hostPort("::1", 9131), "[::1]:9131");
  assertEquals(hostPort("127.0.0.1", 9131), "127.0.0.1:9131");
  assertEquals(hostPort("localhost", 1), "localhost:1");
});

Deno.test("2_5 preview: cut at 32 bytes, parts joined", () => {
  assertEquals(preview(bytes("x".repeat(32))), `"${"x".repeat(32)}"`);
  assertEquals(preview(bytes("x".repeat(33))), `"${"x".repeat(32)}..."`);
  assertEquals(
    preview(bytes("You said: "), bytes("hi\n")),
    '"You said: hi\\x0a"',
  );
  assertEquals(
    preview(bytes("You said: "), bytes("y".repeat(30))),
    `"You said: ${"y".repeat(22)}..."`,
  );
  assertEquals(preview(), '""');
});

/**
 * A client that keeps every read full of short lines (each read ends inside
 * a line) never makes the read buffer grow past what one line too long
 * needs: the partial line is moved to the front instead.
 */
Deno.test("2_5 DieselConnection: full reads of short lines keep the buffer bounded", async () => {
  const pattern = bytes("abcdefghi\n"); // the space is never a whole number of lines
  let offset = 0;
  let largest = 0;
  const conn = {
    read(space: Uint8Array): Promise<number> {
      largest = Math.max(largest, space.length);
      for (let i = 0; i < space.length; i++) {
        space[i] = pattern[offset++ % pattern.length];
      }
      return Promise.resolve(space.length);
    },
  } as unknown as Deno.Conn;
  const client = new DieselConnection(conn);
  for (let line = 0; line < 200_000; line++) {
    assertEquals((await client.untilEol())?.length, pattern.length);
  }
  assert(largest <= 2 * 64 * 1024, `a read was given ${largest} bytes`);
});
