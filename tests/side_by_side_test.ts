/**
 * `deno task side-by-side` (side_by_side/side_by_side.ts): the generator
 * in-process on a small made-up book script and recipe (pairing, order, book
 * lines no marker quotes kept in place, a bad marker refused with its line);
 * the task's one-line errors for bad input; each recipe against the book's
 * own script in BOOK_DIR (skipped without it); and headless Chromium loading
 * the index and a page from disk (skipped without chromium).
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { bookLines } from "../side_by_side/outline.ts";
import {
  InputError,
  MarkerError,
  type Outline,
  outlinePage,
  pageName,
  readInputs,
  type Recipe,
  RECIPES,
  renderPage,
  writePages,
} from "../side_by_side/side_by_side.ts";
import {
  DENO,
  have,
  HEADLESS_CHROMIUM,
  readBookScript,
  ROOT,
  run,
} from "./harness.ts";

const MADE_UP_BOOK = `#!/usr/bin/env python
# A made-up script

import socket

class Server(object):
    """ A docstring """

    def run(self):
        # say hello
        print ("hello <there> & 'you'")
        return 1


if __name__ == '__main__':
    Server().run()
`;

const MADE_UP_PORT = `/** The header. */
import { x } from "y";
// book: import socket
// Deno's own sockets need no import.
// book: class Server(object):
class Server {
  // book:     def run(self):
  // book: print ("hello <there> & 'you'")
  run() {
    console.log("hello <there> & 'you'");
    // book: return 1
    return 1;
  }
}

// --- Not in the book: the bounds ---
const MAX = 1;
const MIN = 0;

// book: if __name__ == '__main__':
if (import.meta.main) {
  // book: Server().run()
  new Server().run();
}
`;

const MADE_UP: Recipe = {
  id: "2_0",
  port: "2_0_made_up.ts",
  book: "2_0_made_up.py",
  en: "A made-up recipe",
  ko: "지어낸 레시피",
};

/** The rows as "book N" (an empty right cell) or "pair N-M | from-to". */
function rowSummary(outline: Outline): string[] {
  return outline.rows.map((row) =>
    row.kind === "book"
      ? `book ${row.book.line}`
      : `pair ${
        row.book.map((l) => l.line).join(",")
      } | ${row.port.from}-${row.port.to}`
  );
}

/** Text of an HTML fragment: tags dropped, entities read. */
function textOf(html: string): string {
  return html.replace(/<[^>]*>/g, "").replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#x27;/g, "'")
    .replace(/&amp;/g, "&");
}

/**
 * One row of a rendered page: its class, its book lines' texts by line
 * number, and its Deno (lines joined by newlines).
 */
interface RenderedRow {
  kind: string;
  book: Map<number, string>;
  /** The book's code lines no marker quotes, marked on the page. */
  gaps: Set<number>;
  port: string;
}

/** The rows of a rendered page's table, in order, read back from its HTML. */
function renderedRows(html: string): RenderedRow[] {
  const body = html.slice(html.indexOf("<tbody>"), html.indexOf("</tbody>"));
  return body.split("<tr ").slice(1).map((tr) => {
    const kind = /^class="([^"]*)"/.exec(tr)![1];
    const py = tr.slice(
      tr.indexOf('<td class="py">'),
      tr.indexOf('<td class="ts"'),
    );
    const ts = tr.slice(tr.indexOf('<td class="ts"'), tr.lastIndexOf("</td>"));
    const book = new Map(
      py.split('<span class="l" data-n="').slice(1).map((piece) => {
        const n = Number(/^\d+/.exec(piece)![0]);
        return [n, textOf(piece.slice(piece.indexOf(">") + 1))];
      }),
    );
    const port = ts.split('<span class="l" data-n="').slice(1)
      .map((piece) => textOf(piece.slice(piece.indexOf(">") + 1)));
    const gaps = new Set(
      [...py.matchAll(/<span class="l" data-n="(\d+)"[^>]* data-gap>/g)]
        .map((m) => Number(m[1])),
    );
    return { kind, book, gaps, port: port.join("\n") };
  });
}

Deno.test("side by side: markers pair with the book's lines, in order, unquoted lines in place", () => {
  const outline = outlinePage(MADE_UP.port, MADE_UP_BOOK, MADE_UP_PORT);
  assertEquals(rowSummary(outline), [
    "book 1",
    "book 2",
    "book 3",
    "pair 4 | 4-4", // the sentence on what became of `import socket`
    "book 5",
    "pair 6 | 6-6",
    "book 7", // the docstring: in place, an empty right cell
    "book 8",
    "pair 9,10,11 | 9-10", // two markers, the book's comment between them kept
    "pair 12 | 12-14", // up to the section heading, blank lines trimmed
    "book 13",
    "book 14",
    "pair 15 | 21-21",
    "pair 16 | 23-24",
  ]);
  assertEquals(
    outline.parts.map((p) =>
      `${p.kind} ${p.title} ${p.port.from}-${p.port.to}`
    ),
    [
      "preamble Before the first marker 1-2",
      "section Not in the book: the bounds 17-18",
    ],
  );
  assertEquals(outline.unquoted, []);
  assertEquals(outline.warnings, []);
});

Deno.test("side by side: the page shows the rows in the book's order, each Deno cell under its marker", () => {
  const outline = outlinePage(MADE_UP.port, MADE_UP_BOOK, MADE_UP_PORT);
  const html = renderPage(MADE_UP, MADE_UP_BOOK, MADE_UP_PORT, outline);
  const rows = renderedRows(html);
  const bookText = MADE_UP_BOOK.split("\n");
  // Every line of the book once, in its order, word for word.
  assertEquals(
    rows.flatMap((r) => [...r.book.keys()]),
    bookText.slice(0, -1).map((_, i) => i + 1),
  );
  for (const row of rows) {
    for (const [n, text] of row.book) assertEquals(text, bookText[n - 1]);
  }
  assertEquals(rows.map((r) => r.kind), outline.rows.map((r) => r.kind));
  // Unquoted lines: an empty right cell.
  assertEquals(rows[6].port, "");
  // The Deno under `def run` and `print`, dedented, the markers left out.
  assertEquals(
    rows[8].port,
    `run() {\n  console.log("hello <there> & 'you'");`,
  );
  assertStringIncludes(
    html,
    '<span class="l" data-n="9"><span class="hljs-title function_">run</span>',
  );
  assertEquals(rows[3].port, "// Deno's own sockets need no import.");
  // The port's own parts, folded, with their size; the language switch.
  assertMatch(
    html,
    /<details class="part preamble"[^>]*><summary>.*Before the first marker.*2 lines.*2줄/,
  );
  assertMatch(
    html,
    /<details class="part section" data-line="16"><summary><code>Not in the book: the bounds<\/code><span class="size">.*2 lines.*2줄.*const.*MAX/,
  );
  assertStringIncludes(html, "지어낸 레시피");
  assertStringIncludes(html, 'id="lang-ko"');
  // Highlighted here; the page loads nothing.
  assertStringIncludes(html, '<span class="hljs-keyword">import</span>');
  assert(!/<script|<link|src=/.test(html), "the page must load nothing");
});

Deno.test("side by side: a book code line no marker quotes is marked, in place", () => {
  const port = MADE_UP_PORT.replace("// book: class Server(object):\n", "");
  const outline = outlinePage(MADE_UP.port, MADE_UP_BOOK, port);
  assertEquals(outline.unquoted.map((l) => l.line), [6]);
  assertEquals(rowSummary(outline).slice(3, 7), [
    "pair 4 | 4-5", // `class Server {` now falls under `import socket`
    "book 5",
    "book 6",
    "book 7",
  ]);
  const rows = renderedRows(renderPage(MADE_UP, MADE_UP_BOOK, port, outline));
  assertEquals(rows[5].kind, "book gap");
  assertEquals([...rows[5].gaps], [6]);
  assertEquals(rows[6].kind, "book");
  assertEquals(rows[6].gaps.size, 0);
});

Deno.test("side by side: a comment just above a marker, after code, is shown with that marker's Deno", () => {
  const port = MADE_UP_PORT.replace(
    "    // book: return 1\n",
    "    /** The book's answer. */\n    // book: return 1\n",
  );
  const outline = outlinePage(MADE_UP.port, MADE_UP_BOOK, port);
  const summary = rowSummary(outline);
  // `run()`'s cell stops before the comment; `return 1`'s starts with it,
  // its marker line left out.
  assertEquals(summary.slice(8, 10), [
    "pair 9,10,11 | 9-10",
    "pair 12 | 11-15",
  ]);
  const pair = outline.rows.find((r) =>
    r.kind === "pair" && r.port.from === 11
  );
  if (pair?.kind !== "pair") throw new Error("no row's cell starts at line 11");
  assertEquals(pair.port.skip, [12]);
  const rows = renderedRows(renderPage(MADE_UP, MADE_UP_BOOK, port, outline));
  const cell = rows.find((r) => r.port.includes("The book's answer"))!;
  assert(
    cell.port.indexOf("The book's answer") < cell.port.indexOf("return 1"),
  );
  assert(!cell.port.includes("// book:"), cell.port);
});

Deno.test("side by side: a marker the book does not have is refused, naming the recipe, its line and text", async () => {
  const port = MADE_UP_PORT.replace("// book: return 1", "// book: return 2");
  const error = assertThrows(
    () => outlinePage(MADE_UP.port, MADE_UP_BOOK, port),
    MarkerError,
  );
  assertEquals(
    error.message,
    `2_0_made_up.ts line 11: the marker quotes a line the book's script does not have: "return 2"`,
  );
  // Nothing is written.
  const out = await Deno.makeTempDir({ prefix: "side_by_side_" });
  try {
    await assertRejects(
      () =>
        writePages(out, [{ recipe: MADE_UP, python: MADE_UP_BOOK, ts: port }]),
      MarkerError,
      "line 11",
    );
    assertEquals([...Deno.readDirSync(out)], []);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("side by side: a marker out of the book's order is a warning; its Deno is folded below", () => {
  const port = MADE_UP_PORT.replace(
    "// book: if __name__ == '__main__':\nif (import.meta.main) {\n  // book: Server().run()",
    "// book: Server().run()\nif (import.meta.main) {\n  // book: if __name__ == '__main__':",
  );
  const outline = outlinePage(MADE_UP.port, MADE_UP_BOOK, port);
  // The first marker pairs with the line it quotes, leaving the line before
  // it unquoted; the second is behind, so its Deno has no row to go to.
  assertEquals(outline.warnings.length, 2, outline.warnings.join("\n"));
  assertMatch(
    outline.warnings[0],
    /^2_0_made_up\.ts: line 20 quotes book line 16 /,
  );
  assertMatch(
    outline.warnings[1],
    /^2_0_made_up\.ts: line 22 quotes .* out of the book's order/,
  );
  assertEquals(rowSummary(outline).slice(-2), ["book 15", "pair 16 | 21-21"]);
  assertEquals(outline.unquoted.map((l) => l.line), [15]);
  assertEquals(
    outline.parts.map((p) =>
      `${p.kind} ${p.title} ${p.port.from}-${p.port.to}`
    ),
    [
      "preamble Before the first marker 1-2",
      "section Not in the book: the bounds 17-18",
      "stray Under a marker out of the book's order (line 22) 23-24",
    ],
  );
});

Deno.test("side by side: BOOK_DIR unset or missing a script is one line naming the file and the book's repository", async () => {
  await assertRejects(
    () => readInputs(undefined, ROOT),
    InputError,
    "BOOK_DIR is not set: it must name the folder holding 2_1_forking_mixin_socket_server.py",
  );
  const empty = await Deno.makeTempDir({ prefix: "side_by_side_book_" });
  try {
    const error = await assertRejects(
      () => readInputs(empty, ROOT),
      InputError,
    );
    assertEquals(error.message.split("\n").length, 1);
    assertStringIncludes(
      error.message,
      `${empty}/2_1_forking_mixin_socket_server.py does not exist`,
    );
    assertStringIncludes(
      error.message,
      "Python-Network-Programming-Cookbook-Second-Edition by PacktPublishing",
    );
  } finally {
    await Deno.remove(empty);
  }
});

/** `deno task -q side-by-side` with BOOK_DIR as given: its exit and output. */
function sideBySideTask(bookDir: string) {
  return run(DENO, ["task", "-q", "side-by-side"], {
    env: { BOOK_DIR: bookDir },
    ms: 60_000,
  });
}

Deno.test("side by side: the task, with BOOK_DIR empty or wrong, prints one line and exits 1", async () => {
  const unset = await sideBySideTask("");
  assertEquals(unset.code, 1, unset.stderr);
  assertEquals(unset.stdout, "");
  assertMatch(
    unset.stderr,
    /^BOOK_DIR is not set: .*2_1_forking_mixin_socket_server\.py.*PacktPublishing.*\n$/,
  );
  // A space in the path: the task's read permission names it whole.
  const empty = await Deno.makeTempDir({ prefix: "side by side book " });
  try {
    const missing = await sideBySideTask(empty);
    assertEquals(missing.code, 1, missing.stderr);
    assertMatch(
      missing.stderr,
      new RegExp(
        `^${empty}/2_1_forking_mixin_socket_server\\.py does not exist: .*PacktPublishing[^\\n]*\\n$`,
      ),
    );
  } finally {
    await Deno.remove(empty);
  }
});

// Against the book's own scripts: every code line on its page, beside Deno.
// This fails for a recipe until its markers quote every line of its script.
for (const recipe of RECIPES) {
  const book = await readBookScript(recipe.book);
  if (book.skip !== undefined) {
    console.warn(`skipping the ${recipe.id} side-by-side page: ${book.skip}`);
  }
  Deno.test({
    name:
      `side by side: ${recipe.port}: every book code line is on its page, beside Deno`,
    ignore: book.skip !== undefined,
    fn: async () => {
      const python = book.text!;
      const ts = await Deno.readTextFile(new URL(recipe.port, ROOT));
      const outline = outlinePage(recipe.port, python, ts);
      const rows = renderedRows(renderPage(recipe, python, ts, outline));
      const problems: string[] = [];
      for (const line of bookLines(python)) {
        const row = rows.find((r) => r.book.has(line.line));
        if (row === undefined) {
          problems.push(`book line ${line.line} is not on the page`);
        } else if (row.book.get(line.line) !== line.text) {
          problems.push(
            `book line ${line.line} reads ${
              JSON.stringify(row.book.get(line.line))
            }`,
          );
        } else if (line.kind === "code" && row.gaps.has(line.line)) {
          problems.push(
            `book line ${line.line} is not quoted: ${
              JSON.stringify(line.text.trim())
            }`,
          );
        } else if (
          line.kind === "code" &&
          (row.kind !== "pair" || row.port.trim() === "")
        ) {
          problems.push(
            `book line ${line.line} has no Deno beside it: ${
              JSON.stringify(line.text.trim())
            }`,
          );
        }
      }
      assertEquals(problems, [], recipe.port);
    },
  });
}

/** Headless Chromium's DOM of a page on disk. */
async function dumpDom(file: string, profile: string): Promise<string> {
  const chromium = await run("chromium", [
    ...HEADLESS_CHROMIUM,
    `--user-data-dir=${profile}`,
    "--dump-dom",
    `file://${file}`,
  ], { ms: 60_000 });
  assertEquals(chromium.code, 0, chromium.stderr);
  return chromium.stdout;
}

Deno.test({
  name:
    "side by side: headless Chromium loads the index and a page from disk: both columns, the folded parts, the Korean labels",
  ignore: !have("chromium"),
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "side_by_side_out_" });
    const profile = await Deno.makeTempDir({
      prefix: "side_by_side_chromium_",
    });
    try {
      const index = await writePages(out, [
        { recipe: MADE_UP, python: MADE_UP_BOOK, ts: MADE_UP_PORT },
      ]);
      assertEquals(index, `${out}/index.html`);
      const indexDom = await dumpDom(index, profile);
      assertStringIncludes(indexDom, "2장, 책과 나란히");
      assertMatch(
        indexDom,
        /<a href="2_0_made_up\.html"><span class="en">A made-up recipe<\/span><span class="ko" lang="ko">지어낸 레시피<\/span><\/a>/,
      );
      const pageDom = await dumpDom(`${out}/${pageName(MADE_UP)}`, profile);
      assertMatch(pageDom, /<th class="py">.*책의 스크립트.*2_0_made_up\.py/);
      assertMatch(pageDom, /<th class="ts">.*이식판 \(Deno\).*2_0_made_up\.ts/);
      assertEquals(pageDom.match(/<tr class="pair"/g)?.length, 6);
      assertEquals(pageDom.match(/<td class="ts"><\/td>/g)?.length, 8);
      assertMatch(
        pageDom,
        /<details class="part section" data-line="16"><summary><code>Not in the book: the bounds<\/code>/,
      );
      assert(!/<details[^>]* open/.test(pageDom), "the parts are folded");
      assertStringIncludes(pageDom, "이식판이 더한 것");
      assertStringIncludes(pageDom, "첫 <code>// book:</code> 표지 앞");
    } finally {
      await Deno.remove(out, { recursive: true });
      await Deno.remove(profile, { recursive: true });
    }
  },
});
if (!have("chromium")) {
  console.warn(
    "skipping the side-by-side Chromium test: chromium is not installed",
  );
}
