/**
 * The `book:` markers are a complete outline of the book's scripts: every
 * code line of each book script is quoted, word for word (whitespace aside),
 * once, in the book's order, in the one marker form (side_by_side/outline.ts).
 * The parser is tested in-process on a small made-up script first; the
 * recipes against the book's own scripts in BOOK_DIR (skipped without it).
 */
import { assert, assertEquals } from "@std/assert";
import {
  bookCode,
  bookLines,
  headings,
  markers,
  pairOutline,
  strayMarkers,
} from "../side_by_side/outline.ts";
import { readBookScript, ROOT } from "./harness.ts";

const MADE_UP_BOOK = `#!/usr/bin/env python
# A comment

import socket

GREETING = b"""HELLO\\r\\n
world"""

class Server(object):
    """ A docstring
    over two lines """
    def run(self):
        print (" interrupted. """)
        x = (1,
             2)  # the tuple
        return x
`;

Deno.test("outline: code, comments, blanks and docstrings are told apart", () => {
  const kinds = bookLines(MADE_UP_BOOK).map((l) => `${l.line} ${l.kind}`);
  assertEquals(kinds, [
    "1 comment",
    "2 comment",
    "3 blank",
    "4 code",
    "5 blank",
    "6 code",
    "7 code", // inside an assigned triple-quoted string: code
    "8 blank",
    "9 code",
    "10 docstring",
    "11 docstring",
    "12 code",
    "13 code", // `" interrupted. """` is a string and an empty one
    "14 code",
    "15 code",
    "16 code",
  ]);
});

const MADE_UP_PORT = `/** The header. */
// book: import socket
import { x } from "y";
// book: GREETING = b"""HELLO\\r\\n
// book: world"""
const GREETING = "HELLO";
// book: class Server(object):
class Server {
  // book:   def run(self):
  run() {
    // book: print (" interrupted. """)
    console.log("interrupted");
    // book: x = (1,
    // book: 2)  # the tuple
    // book: return x
    return [1, 2];
  }
}
// --- Not in the book: the bounds ---
const MAX = 1;
`;

Deno.test("outline: markers pair with the book's code lines in order", () => {
  const book = bookCode(MADE_UP_BOOK);
  const { pairs, errors } = pairOutline(book, markers(MADE_UP_PORT));
  assertEquals(errors, []);
  assertEquals(
    pairs.map((p) => [p.book.line, p.marker.line]),
    [[4, 2], [6, 4], [7, 5], [9, 7], [12, 9], [13, 11], [14, 13], [15, 14], [
      16,
      15,
    ]],
  );
  assertEquals(headings(MADE_UP_PORT), [
    { line: 19, title: "Not in the book: the bounds" },
  ]);
});

Deno.test("outline: a missing, unknown or out-of-order marker is named", () => {
  const book = bookCode(MADE_UP_BOOK);
  const port = MADE_UP_PORT
    .replace("// book: return x\n", "") // missing
    .replace("// book: class Server(object):", "// book: class Client(object):")
    .replace(
      '// book: GREETING = b"""HELLO\\r\\n\n// book: world"""',
      '// book: world"""\n// book: GREETING = b"""HELLO\\r\\n',
    );
  const { errors } = pairOutline(book, markers(port));
  const messages = errors.map((e) => e.message);
  assert(
    messages.some((m) =>
      /line 4 quotes book line 7 .* before book line 6/.test(m)
    ),
    messages.join("\n"),
  );
  assert(
    messages.some((m) =>
      /line 7 quotes a line the book's script does not have/.test(m)
    ),
    messages.join("\n"),
  );
  assert(
    messages.some((m) => /book line 16 is not quoted: "return x"/.test(m)),
    messages.join("\n"),
  );
});

Deno.test("outline: a marker in another form is found", () => {
  const stray = strayMarkers(
    "/** book: `def run(self):` */\nfoo(); // book: x\n// book: fine\n",
  );
  assertEquals(stray.map((m) => m.line), [1, 2]);
});

const RECIPES = [
  "2_1_forking_mixin_socket_server",
  "2_2_threading_mixin_socket_server",
  "2_3_chat_server_with_select",
  "2_4_simple_web_server_with_epoll",
  "2_5_echo_server_with_diesel",
];

for (const recipe of RECIPES) {
  const port = await Deno.readTextFile(new URL(`${recipe}.ts`, ROOT));

  Deno.test(`${recipe}.ts: every book marker has the one form`, () => {
    const stray = strayMarkers(port);
    assertEquals(
      stray.map((m) => `line ${m.line}: ${m.quote}`),
      [],
      "write a marker as `// book: <the book's line>`, alone on its line",
    );
  });

  Deno.test(`${recipe}.ts: the book's flow comes first`, () => {
    const marks = markers(port);
    assert(marks.length > 0, "no book: marker at all");
    const median = marks[Math.floor(marks.length / 2)].line;
    const lines = port.split("\n").length;
    assert(
      median <= lines / 2,
      `the median book: marker is at line ${median} of ${lines}`,
    );
  });

  const book = await readBookScript(`${recipe}.py`);
  if (book.skip !== undefined) {
    console.warn(`skipping the ${recipe} outline: ${book.skip}`);
  }
  Deno.test({
    name: `${recipe}.ts: its book markers quote every line of the book's ` +
      `script, in order`,
    ignore: book.skip !== undefined,
    fn: () => {
      const code = bookCode(book.text!);
      const { errors } = pairOutline(code, markers(port));
      assertEquals(errors.map((e) => e.message), [], `${recipe}.ts`);
    },
  });
}
