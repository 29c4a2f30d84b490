/**
 * `deno task side-by-side`: each book script beside its port, one HTML page
 * per recipe plus an index, written to side_by_side/out/ (ignored by git);
 * the last line printed is the index's path.
 *
 *     export BOOK_DIR=/path/to/Python-Network-Programming-Cookbook-Second-Edition/Chapter02
 *     deno task side-by-side
 *
 * A page has two columns whose rows line up: on the left the book's script
 * line by line (comments, blanks and docstrings too, where the book has
 * them); on the right, for each `// book:` marker or run of consecutive
 * markers, the Deno code under it up to the next marker or section heading.
 * Book lines no marker quotes keep their place with an empty right cell.
 * Below the book's script, what the port adds (the code before the first
 * marker, and each `// --- Not in the book: ... ---` section) is folded, each
 * under its heading, with how many lines it adds. side_by_side/outline.ts
 * tells the book's code lines from the rest and pairs them with the markers.
 *
 * The pages need no network: highlight.js (from npm, pinned in deno.json)
 * highlights both languages here, when the page is written, and the styles
 * are inlined. The page's own words are in English and Korean, switched by
 * three radio buttons and CSS (no script). The book's code is read from
 * BOOK_DIR when the pages are made and is never part of this repository.
 */

// @ts-types="./highlight_js.d.ts"
import hljs from "highlight.js/lib/core";
// @ts-types="./highlight_js_language.d.ts"
import python from "highlight.js/lib/languages/python";
// @ts-types="./highlight_js_language.d.ts"
import typescript from "highlight.js/lib/languages/typescript";
import {
  bookCode,
  type BookLine,
  bookLines,
  headings,
  type Marker,
  markers,
  normalize,
  pairOutline,
} from "./outline.ts";

hljs.registerLanguage("python", python);
hljs.registerLanguage("typescript", typescript);

/** One recipe: its port, the book's script it mirrors, and its titles. */
export interface Recipe {
  id: string;
  /** The port's file name, at the repository root. */
  port: string;
  /** The book's script's file name, in BOOK_DIR. */
  book: string;
  /** The recipe's title in English, as the port's header names it. */
  en: string;
  /** The recipe's title in Korean, as the Korean study notes name it. */
  ko: string;
}

export const RECIPES: Recipe[] = [
  {
    id: "2_1",
    port: "2_1_forking_mixin_socket_server.ts",
    book: "2_1_forking_mixin_socket_server.py",
    en: "Using ForkingMixIn in your socket server applications",
    ko: "소켓 서버 애플리케이션에서 ForkingMixIn 사용",
  },
  {
    id: "2_2",
    port: "2_2_threading_mixin_socket_server.ts",
    book: "2_2_threading_mixin_socket_server.py",
    en: "Using ThreadingMixIn in your socket server applications",
    ko: "소켓 서버 애플리케이션에서 ThreadingMixIn 사용",
  },
  {
    id: "2_3",
    port: "2_3_chat_server_with_select.ts",
    book: "2_3_chat_server_with_select.py",
    en: "Writing a chat server using select.select",
    ko: "select.select를 이용한 채팅 서버 구현",
  },
  {
    id: "2_4",
    port: "2_4_simple_web_server_with_epoll.ts",
    book: "2_4_simple_web_server_with_epoll.py",
    en: "Writing a simple web server using epoll",
    ko: "select.epoll을 이용한 웹 서버 멀티플렉싱",
  },
  {
    id: "2_5",
    port: "2_5_echo_server_with_diesel.ts",
    book: "2_5_echo_server_with_diesel.py",
    en: "Multiplexing an echo server using the Diesel concurrent library",
    ko: "디젤 병렬 라이브러리를 이용한 에코 서버 멀티플렉싱",
  },
];

/** Where a reader gets the book's scripts, for the one-line input errors. */
export const BOOK_SOURCE = "the Chapter02 folder of the book's repository, " +
  "Python-Network-Programming-Cookbook-Second-Edition by PacktPublishing " +
  "(https://github.com/PacktPublishing/Python-Network-Programming-Cookbook-Second-Edition)";

/** Bad input the generator reports in one line before it exits 1. */
export class InputError extends Error {}

/** A marker quoting a line the book's script does not have. */
export class MarkerError extends InputError {}

/**
 * Lines of the recipe, 1-based and inclusive; empty when `to < from`.
 * `skip` lists lines inside it that are not shown (the markers, when a
 * comment written above them belongs to the code below them).
 */
export interface Span {
  from: number;
  to: number;
  skip?: number[];
}

/** One row of the page's table. */
export type Row =
  /** Book lines quoted by a run of consecutive markers, and the Deno under them. */
  | { kind: "pair"; book: BookLine[]; markers: Marker[]; port: Span }
  /** One book line no marker quotes: an empty right cell. */
  | { kind: "book"; book: BookLine };

/** A part of the port shown folded below the book's script. */
export interface Part {
  kind: "preamble" | "section" | "stray";
  /** The section heading's text, or what the part is. */
  title: string;
  /** The heading's line (a section), or the part's first line. */
  line: number;
  port: Span;
}

/** What a page shows, before it is rendered. */
export interface Outline {
  rows: Row[];
  parts: Part[];
  /** Book code lines no marker quotes (the page marks them). */
  unquoted: BookLine[];
  /** Markers out of the book's order: the page is made, these are printed. */
  warnings: string[];
}

/** A file's lines, split as side_by_side/outline.ts splits them. */
function pythonLines(text: string): string[] {
  return text.replace(/\r\n/g, "\n").replace(/\n$/, "").split("\n");
}

/** The span without its leading and trailing blank lines. */
function trimSpan(lines: string[], span: Span): Span {
  let { from, to } = span;
  while (from <= to && lines[from - 1].trim() === "") from++;
  while (to >= from && lines[to - 1].trim() === "") to--;
  return { from, to };
}

/** How many lines a span shows. */
export function spanLength(span: Span): number {
  return Math.max(0, span.to - span.from + 1 - (span.skip?.length ?? 0));
}

/** The numbers of the lines a span shows, in order. */
function spanLines(span: Span): number[] {
  const skip = new Set(span.skip ?? []);
  const numbers: number[] = [];
  for (let n = span.from; n <= span.to; n++) {
    if (!skip.has(n)) numbers.push(n);
  }
  return numbers;
}

/**
 * Where the comment that ends just above line `stop` begins (a doc comment
 * or `//` lines with no blank line before the stop), or `stop` if none: such
 * a comment introduces the code under the marker at `stop`, so it is shown
 * there, not under the marker before it.
 */
function commentAbove(lines: string[], stop: number, floor: number): number {
  let k = stop - 1;
  while (k >= floor && /^\s*(\/\/|\/\*|\*)/.test(lines[k - 1])) k--;
  return k + 1;
}

/**
 * Lays a recipe beside its book script. `portName` names the recipe in
 * errors. Throws a MarkerError, naming the recipe, the marker's line and its
 * text, for a marker that quotes a line the book's script does not have.
 * Book lines no marker quotes stay in place (rows of their own); markers out
 * of the book's order become warnings, and the Deno under a run of them that
 * pairs with no book line is folded below with the port's own parts.
 */
export function outlinePage(
  portName: string,
  python: string,
  ts: string,
): Outline {
  const book = bookLines(python);
  const code = book.filter((l) => l.kind === "code");
  const known = new Set(code.map((l) => normalize(l.text)));
  const marks = markers(ts);
  for (const marker of marks) {
    if (!known.has(normalize(marker.quote))) {
      throw new MarkerError(
        `${portName} line ${marker.line}: the marker quotes a line the ` +
          `book's script does not have: ${JSON.stringify(marker.quote)}`,
      );
    }
  }
  const { pairs, errors } = pairOutline(code, marks);
  const warnings = errors.flatMap((e) =>
    e.marker ? [`${portName}: ${e.message}`] : []
  );
  const bookLineOf = new Map(pairs.map((p) => [p.marker.line, p.book]));
  const quoted = new Set(pairs.map((p) => p.book.line));

  // The recipe cut at every marker and heading: runs of consecutive marker
  // lines own the lines after them up to the next stop; a heading owns the
  // lines after it up to the next stop.
  const lines = ts.split("\n");
  const markerLines = new Set(marks.map((m) => m.line));
  const headingAt = new Map(headings(ts).map((h) => [h.line, h.title]));
  const isStop = (n: number) => markerLines.has(n) || headingAt.has(n);
  const nextStop = (n: number) => {
    let i = n;
    while (i <= lines.length && !isStop(i)) i++;
    return i;
  };
  const parts: Part[] = [];
  const groups: { markers: Marker[]; book: BookLine[]; port: Span }[] = [];
  // A comment right under a run's markers (and nothing else) stays with
  // that run: it says what became of its book lines.
  const leadOf = (end: number, from: number) => {
    if (!markerLines.has(end)) return end;
    const start = commentAbove(lines, end, from);
    return start === from ? end : start;
  };
  const first = nextStop(1);
  const firstLead = leadOf(first, 1);
  const preamble = trimSpan(lines, { from: 1, to: firstLead - 1 });
  if (spanLength(preamble) > 0) {
    parts.push({
      kind: "preamble",
      title: "Before the first marker",
      line: 1,
      port: preamble,
    });
  }
  // Where the next run's comment (shown with it) begins; see commentAbove.
  let i = first;
  let lead = firstLead;
  while (i <= lines.length) {
    if (headingAt.has(i)) {
      const end = nextStop(i + 1);
      const cut = leadOf(end, i + 1);
      parts.push({
        kind: "section",
        title: headingAt.get(i)!,
        line: i,
        port: trimSpan(lines, { from: i + 1, to: cut - 1 }),
      });
      i = end;
      lead = cut;
      continue;
    }
    const run: Marker[] = [];
    while (markerLines.has(i)) {
      run.push(marks.find((m) => m.line === i)!);
      i++;
    }
    const end = nextStop(i);
    const cut = leadOf(end, i);
    const below = trimSpan(lines, { from: i, to: cut - 1 });
    const port: Span = lead < run[0].line
      ? {
        from: lead,
        to: Math.max(below.to, run[run.length - 1].line),
        skip: run.map((m) => m.line),
      }
      : below;
    lead = cut;
    const paired = run.flatMap((m) => bookLineOf.get(m.line) ?? []);
    if (paired.length > 0) {
      groups.push({ markers: run, book: paired, port });
    } else {
      parts.push({
        kind: "stray",
        title: `Under a marker out of the book's order (line ${run[0].line})`,
        line: run[0].line,
        port,
      });
    }
    i = end;
  }

  // The book's lines in order; a run's rows cover the book from its first
  // quoted line to its last (comments between them included, in place).
  const rows: Row[] = [];
  const groupAt = new Map(groups.map((g) => [g.book[0].line, g]));
  for (let n = 0; n < book.length;) {
    const group = groupAt.get(book[n].line);
    if (group) {
      const last = group.book[group.book.length - 1].line;
      rows.push({
        kind: "pair",
        book: book.slice(n, last),
        markers: group.markers,
        port: group.port,
      });
      n = last;
    } else {
      rows.push({ kind: "book", book: book[n] });
      n++;
    }
  }
  const unquoted = code.filter((l) => !quoted.has(l.line));
  return { rows, parts, unquoted, warnings };
}

// --- Highlighting: highlight.js's HTML, cut into lines ---

/** A piece of highlight.js's output: a span opened or closed, or text. */
type Token = { open: string } | { close: true } | { text: string };

/** One line of highlighted code: the spans open at its start, then its tokens. */
interface HighlightedLine {
  open: string[];
  tokens: Token[];
}

/**
 * Highlights a whole file (so a string or comment over several lines is
 * coloured as one) and cuts the HTML into lines, each closing the spans still
 * open at its end and the next reopening them.
 */
export function highlightLines(
  code: string,
  language: "python" | "typescript",
): HighlightedLine[] {
  const html = hljs.highlight(code, { language, ignoreIllegals: true }).value;
  const result: HighlightedLine[] = [];
  const stack: string[] = [];
  let line: HighlightedLine = { open: [], tokens: [] };
  for (const match of html.matchAll(/<span class="([^"]*)">|<\/span>|[^<]+/g)) {
    if (match[1] !== undefined) {
      stack.push(match[1]);
      line.tokens.push({ open: match[1] });
    } else if (match[0] === "</span>") {
      stack.pop();
      line.tokens.push({ close: true });
    } else {
      match[0].split("\n").forEach((text, k) => {
        if (k > 0) {
          result.push(line);
          line = { open: [...stack], tokens: [] };
        }
        if (text !== "") line.tokens.push({ text });
      });
    }
  }
  result.push(line);
  return result;
}

/** One highlighted line as HTML, without its first `dedent` spaces. */
function renderHighlighted(line: HighlightedLine, dedent: number): string {
  let html = line.open.map((c) => `<span class="${c}">`).join("");
  let depth = line.open.length;
  let strip = dedent;
  for (const token of line.tokens) {
    if ("open" in token) {
      html += `<span class="${token.open}">`;
      depth++;
    } else if ("close" in token) {
      html += "</span>";
      depth--;
    } else {
      let text = token.text;
      if (strip > 0) {
        const spaces = /^ */.exec(text)![0].length;
        text = text.slice(Math.min(spaces, strip));
        strip = text === "" ? strip - spaces : 0;
      }
      html += text;
    }
  }
  return html + "</span>".repeat(Math.max(0, depth));
}

// --- The page ---

/** The page's own words, in English and in Korean. */
function both(en: string, ko: string): string {
  return `<span class="en">${en}</span><span class="ko" lang="ko">${ko}</span>`;
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;")
    .replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function lines(n: number): string {
  return both(`${n} ${n === 1 ? "line" : "lines"}`, `${n}줄`);
}

/** Lines of code as HTML, each with its line number in the gutter. */
function codeBlock(
  highlighted: HighlightedLine[],
  numbers: number[],
  attributes: (n: number) => string,
  dedent = 0,
): string {
  const body = numbers.map((n) =>
    `<span class="l" data-n="${n}"${attributes(n)}>${
      renderHighlighted(highlighted[n - 1], dedent)
    }</span>`
  ).join("");
  return `<pre><code>${body}</code></pre>`;
}

/** The Deno of a span, dedented by its least indentation. */
function portBlock(
  highlighted: HighlightedLine[],
  source: string[],
  span: Span,
): string {
  if (spanLength(span) === 0) return "";
  const numbers = spanLines(span);
  const dedent = Math.min(
    ...numbers.map((n) => source[n - 1])
      .filter((text) => text.trim() !== "")
      .map((text) => /^ */.exec(text)![0].length),
  );
  return codeBlock(highlighted, numbers, () => "", dedent);
}

const STYLE = `
:root { color-scheme: light; --line: #d0d7de; --muted: #656d76; }
body { margin: 0; font: 15px/1.5 system-ui, "Noto Sans KR", "Noto Sans CJK KR", sans-serif; color: #1f2328; background: #fff; }
.page { max-width: 1600px; margin: 0 auto; padding: 0 1.25rem 3rem; }
.lang { position: absolute; opacity: 0; }
.switch { position: sticky; top: 0; z-index: 2; display: flex; gap: .25rem; justify-content: flex-end; padding: .4rem 1.25rem; background: #f6f8fa; border-bottom: 1px solid var(--line); font-size: 13px; }
.switch label { padding: .1rem .6rem; border: 1px solid var(--line); border-radius: 1rem; cursor: pointer; background: #fff; }
#lang-both:checked ~ .switch label[for=lang-both],
#lang-en:checked ~ .switch label[for=lang-en],
#lang-ko:checked ~ .switch label[for=lang-ko] { background: #0969da; border-color: #0969da; color: #fff; }
#lang-en:checked ~ .page .ko, #lang-ko:checked ~ .page .en { display: none; }
#lang-both:checked ~ .page .en + .ko::before { content: " · "; color: var(--muted); }
h1 { font-size: 1.5rem; margin: 1rem 0 .25rem; }
h1 .ko { font-weight: 600; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; }
.lede, .counts, .note { color: var(--muted); margin: .25rem 0; }
.nav { margin: .5rem 0 0; }
.lede .ko, .counts .ko, .note .ko { display: block; }
#lang-both:checked ~ .page :is(.lede, .counts, .note) .en + .ko::before { content: none; }
a { color: #0969da; }
code, pre { font: 13px/1.45 ui-monospace, "DejaVu Sans Mono", "Noto Sans Mono CJK KR", monospace; }
table.side { width: 100%; table-layout: fixed; border-collapse: collapse; margin-top: .75rem; }
table.side th { position: sticky; top: 2.1rem; z-index: 1; background: #fff; text-align: left; font-weight: 600; padding: .4rem .5rem; border-bottom: 2px solid var(--line); }
table.side th code { font-weight: normal; color: var(--muted); }
table.side td { vertical-align: top; padding: 0 .5rem; }
tr.pair td { border-top: 1px solid var(--line); padding-top: .3rem; padding-bottom: .3rem; }
tr.pair td.ts { background: #f6f8fa; }
tr.book + tr.pair td, tr:first-child td { border-top: 1px solid var(--line); }
.l[data-gap] { box-shadow: inset 3px 0 #cf222e; background: #ffebe9; }
.gap-note { color: #cf222e; font-size: 12px; }
pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.l { display: block; padding-left: 3.2em; min-height: 1.45em; }
.l::before { content: attr(data-n); display: inline-block; width: 2.7em; margin-left: -3.2em; margin-right: .5em; text-align: right; color: #8c959f; user-select: none; }
.l[data-kind=comment], .l[data-kind=blank], .l[data-kind=docstring] { opacity: .85; }
details { border: 1px solid var(--line); border-radius: 6px; margin: .5rem 0; }
details > summary { cursor: pointer; padding: .4rem .75rem; background: #f6f8fa; }
details > summary code { font-weight: 600; }
details > summary .size { color: var(--muted); margin-left: .5rem; }
details > pre { padding: .5rem .75rem; border-top: 1px solid var(--line); }
table.index { border-collapse: collapse; margin-top: 1rem; }
table.index th, table.index td { text-align: left; padding: .4rem .75rem; border-bottom: 1px solid var(--line); vertical-align: top; }
table.index .ko { display: block; }
#lang-both:checked ~ .page table.index .en + .ko::before { content: none; }
.hljs-comment, .hljs-quote { color: #6e7781; font-style: italic; }
.hljs-keyword, .hljs-selector-tag, .hljs-meta .hljs-keyword { color: #cf222e; }
.hljs-string, .hljs-regexp, .hljs-meta .hljs-string { color: #0a3069; }
.hljs-number, .hljs-literal, .hljs-symbol, .hljs-bullet, .hljs-variable.constant_ { color: #0550ae; }
.hljs-built_in, .hljs-type, .hljs-title.class_, .hljs-title.class_.inherited__ { color: #953800; }
.hljs-title, .hljs-title.function_, .hljs-section { color: #8250df; }
.hljs-attr, .hljs-attribute, .hljs-property, .hljs-params, .hljs-variable, .hljs-subst { color: #1f2328; }
.hljs-meta { color: #116329; }
.hljs-doctag { color: #cf222e; font-style: normal; }
`;

/** The frame shared by the index and the recipe pages. */
function document(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<input type="radio" name="lang" id="lang-both" class="lang" checked>
<input type="radio" name="lang" id="lang-en" class="lang">
<input type="radio" name="lang" id="lang-ko" class="lang">
<nav class="switch"><label for="lang-both">English · 한국어</label><label for="lang-en">English</label><label for="lang-ko" lang="ko">한국어</label></nav>
<main class="page">
${body}
</main>
</body>
</html>
`;
}

/** The HTML file name of a recipe's page. */
export function pageName(recipe: Recipe): string {
  return recipe.port.replace(/\.ts$/, ".html");
}

/** What a page counts, for its header and the index. */
export interface Counts {
  bookLines: number;
  bookCode: number;
  quoted: number;
  portLines: number;
  besideBook: number;
  ownParts: number;
  markers: number;
}

export function countsOf(outline: Outline, python: string, ts: string): Counts {
  const pairs = outline.rows.filter((r) => r.kind === "pair");
  const code = bookCode(python).length;
  return {
    bookLines: pythonLines(python).length,
    bookCode: code,
    quoted: code - outline.unquoted.length,
    portLines: ts.replace(/\n$/, "").split("\n").length,
    besideBook: pairs.reduce((sum, r) => sum + spanLength(r.port), 0),
    ownParts: outline.parts.reduce((sum, p) => sum + spanLength(p.port), 0),
    markers: markers(ts).length,
  };
}

/** One recipe's page: the header, the two columns, the folded parts. */
export function renderPage(
  recipe: Recipe,
  python: string,
  ts: string,
  outline: Outline,
): string {
  const book = highlightLines(pythonLines(python).join("\n"), "python");
  const source = ts.split("\n");
  const port = highlightLines(ts, "typescript");
  const counts = countsOf(outline, python, ts);
  const kindOf = new Map(bookLines(python).map((l) => [l.line, l.kind]));
  const unquoted = new Set(outline.unquoted.map((l) => l.line));
  const bookAttributes = (n: number) =>
    ` data-kind="${kindOf.get(n)}"${unquoted.has(n) ? " data-gap" : ""}`;
  const gap = both("not quoted yet", "아직 인용되지 않음");
  const rows = outline.rows.map((row) => {
    if (row.kind === "pair") {
      const first = row.book[0].line;
      const last = row.book[row.book.length - 1].line;
      const portRange = spanLength(row.port) > 0
        ? `${row.port.from}-${row.port.to}`
        : "";
      return `<tr class="pair" data-book="${first}-${last}" data-port="${portRange}" data-markers="${
        row.markers.map((m) => m.line).join(",")
      }"><td class="py">${
        codeBlock(book, row.book.map((l) => l.line), bookAttributes)
      }</td><td class="ts">${portBlock(port, source, row.port)}</td></tr>`;
    }
    const isGap = row.book.kind === "code";
    return `<tr class="book${
      isGap ? " gap" : ""
    }" data-book="${row.book.line}">` +
      `<td class="py">${
        codeBlock(book, [row.book.line], bookAttributes)
      }</td><td class="ts">${
        isGap ? `<span class="gap-note">${gap}</span>` : ""
      }</td></tr>`;
  }).join("\n");
  const parts = outline.parts.map((part) => {
    const title = part.kind === "preamble"
      ? both(
        "Before the first marker: the header and imports",
        "첫 <code>// book:</code> 표지 앞: 머리말과 import",
      )
      : part.kind === "stray"
      ? both(
        `Under a marker out of the book's order (line ${part.line})`,
        `책의 순서를 벗어난 표지 아래 (${part.line}번 줄)`,
      )
      : `<code>${escapeHtml(part.title)}</code>`;
    return `<details class="part ${part.kind}" data-line="${part.line}"><summary>${title}<span class="size">${
      lines(spanLength(part.port))
    }</span></summary>${portBlock(port, source, part.port)}</details>`;
  }).join("\n");
  const gaps = outline.unquoted.length === 0 ? "" : `<p class="note">${
    both(
      `${outline.unquoted.length} of the book's code lines are not quoted by a marker yet: their right cells are empty, and marked.`,
      `책의 코드 줄 중 ${outline.unquoted.length}줄은 아직 표지로 인용되지 않았습니다. 그 오른쪽 칸은 비어 있고 표시되어 있습니다.`,
    )
  }</p>`;
  const body = `<p class="nav"><a href="index.html">${
    both("All recipes", "모든 레시피")
  }</a> | <a href="#parts">${
    both("What the port adds", "이식판이 더한 것")
  } ↓</a></p>
<h1>${recipe.id} — ${both(escapeHtml(recipe.en), escapeHtml(recipe.ko))}</h1>
<p class="lede">${
    both(
      "Left: the book's script, line by line as in the book. Right: the Deno code under each <code>// book:</code> marker that quotes those lines, up to the next marker. A book line with an empty right cell is a comment, blank line or docstring, which the port does not quote.",
      "왼쪽은 책의 스크립트를 책에 있는 그대로 한 줄씩 보여 줍니다. 오른쪽은 그 줄을 인용하는 <code>// book:</code> 표지 아래의 Deno 코드를 다음 표지까지 보여 줍니다. 오른쪽 칸이 빈 책의 줄은 이식판이 인용하지 않는 주석, 빈 줄, 독스트링입니다.",
    )
  }</p>
<p class="counts">${
    both(
      `The book: ${counts.bookLines} lines, ${counts.bookCode} of them code, ${counts.quoted} quoted. The port: ${counts.portLines} lines; ${counts.besideBook} beside the book's lines, ${counts.ownParts} in its own parts below, ${counts.markers} markers.`,
      `책: ${counts.bookLines}줄, 그중 코드 ${counts.bookCode}줄, 인용된 줄 ${counts.quoted}줄. 이식판: ${counts.portLines}줄, 책의 줄 옆에 ${counts.besideBook}줄, 아래의 이식판만의 부분에 ${counts.ownParts}줄, 표지 ${counts.markers}개.`,
    )
  }</p>
${gaps}
<table class="side">
<colgroup><col style="width:47%"><col style="width:53%"></colgroup>
<thead><tr><th class="py">${
    both("The book's script", "책의 스크립트")
  } <code>${recipe.book}</code></th><th class="ts">${
    both("The port (Deno)", "이식판 (Deno)")
  } <code>${recipe.port}</code></th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
<h2 id="parts">${both("What the port adds", "이식판이 더한 것")}</h2>
<p class="note">${
    both(
      "Everything of the port that no marker covers, folded: open a part to read it.",
      "어떤 표지에도 속하지 않는 이식판의 코드를 접어 두었습니다. 펼쳐서 읽으십시오.",
    )
  }</p>
${parts}
<p class="note">${
    both(
      `The book's script was read from BOOK_DIR when this page was made; it comes from ${
        escapeHtml(BOOK_SOURCE)
      } (MIT license).`,
      `책의 스크립트는 이 페이지를 만들 때 BOOK_DIR에서 읽었습니다. 출처는 PacktPublishing의 Python-Network-Programming-Cookbook-Second-Edition 저장소의 Chapter02 폴더입니다(MIT 라이선스).`,
    )
  }</p>`;
  return document(`${recipe.id} — ${recipe.en} · ${recipe.ko}`, body);
}

/** The index: every recipe, its titles, its counts and a link to its page. */
export function renderIndex(
  entries: { recipe: Recipe; counts: Counts }[],
): string {
  const rows = entries.map(({ recipe, counts }) =>
    `<tr><td>${recipe.id}</td><td><a href="${pageName(recipe)}">${
      both(escapeHtml(recipe.en), escapeHtml(recipe.ko))
    }</a></td><td>${
      both(
        `${counts.quoted} of ${counts.bookCode} code lines quoted`,
        `코드 ${counts.bookCode}줄 중 ${counts.quoted}줄 인용`,
      )
    }</td><td>${
      both(
        `${counts.besideBook} lines beside the book, ${counts.ownParts} of its own`,
        `책 옆에 ${counts.besideBook}줄, 이식판만의 부분 ${counts.ownParts}줄`,
      )
    }</td></tr>`
  ).join("\n");
  const body = `<h1>${
    both(
      "Chapter 2, side by side with the book",
      "2장, 책과 나란히",
    )
  }</h1>
<p class="lede">${
    both(
      "Each page puts one of the book's scripts (Python) beside its port (Deno, TypeScript), line by line, and folds below what the port adds.",
      "각 페이지는 책의 스크립트(Python)와 그 이식판(Deno, TypeScript)을 한 줄씩 나란히 보여 주고, 이식판이 더한 것은 아래에 접어 둡니다.",
    )
  }</p>
<table class="index">
<thead><tr><th>${both("Recipe", "레시피")}</th><th>${
    both("Title", "제목")
  }</th><th>${both("The book", "책")}</th><th>${
    both("The port", "이식판")
  }</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`;
  return document(
    "Chapter 2, side by side with the book · 2장, 책과 나란히",
    body,
  );
}

/** One recipe's texts, read or made up. */
export interface Input {
  recipe: Recipe;
  python: string;
  ts: string;
}

/**
 * Writes one page per input and the index into `outDir`, and returns the
 * index's path. Stops at the first marker quoting a line the book does not
 * have (a MarkerError), before writing anything; warnings (markers out of
 * order) go to `warn`.
 */
export async function writePages(
  outDir: string,
  inputs: Input[],
  warn: (line: string) => void = console.warn,
): Promise<string> {
  const pages = inputs.map(({ recipe, python, ts }) => {
    const outline = outlinePage(recipe.port, python, ts);
    outline.warnings.forEach(warn);
    return {
      recipe,
      html: renderPage(recipe, python, ts, outline),
      counts: countsOf(outline, python, ts),
    };
  });
  await Deno.mkdir(outDir, { recursive: true });
  for (const page of pages) {
    await Deno.writeTextFile(`${outDir}/${pageName(page.recipe)}`, page.html);
  }
  const index = `${outDir}/index.html`;
  await Deno.writeTextFile(index, renderIndex(pages));
  return index;
}

/**
 * Reads the five book scripts from `bookDir` and the five recipes from
 * `root`. Throws an InputError in one line, naming the file, when BOOK_DIR
 * is unset or a script is missing.
 */
export async function readInputs(
  bookDir: string | undefined,
  root: URL,
): Promise<Input[]> {
  if (!bookDir) {
    throw new InputError(
      `BOOK_DIR is not set: it must name the folder holding ${
        RECIPES[0].book
      } and the other book scripts, ${BOOK_SOURCE}`,
    );
  }
  const inputs: Input[] = [];
  for (const recipe of RECIPES) {
    const path = `${bookDir.replace(/\/+$/, "")}/${recipe.book}`;
    let python: string;
    try {
      python = await Deno.readTextFile(path);
    } catch (error) {
      // A BOOK_DIR that is a file, not a folder, is as wrong as a missing one.
      if (
        !(error instanceof Deno.errors.NotFound ||
          error instanceof Deno.errors.NotADirectory)
      ) throw error;
      throw new InputError(
        `${path} does not exist: BOOK_DIR must name ${BOOK_SOURCE}`,
      );
    }
    const ts = await Deno.readTextFile(new URL(recipe.port, root));
    inputs.push({ recipe, python, ts });
  }
  return inputs;
}

/** The repository's root, where the recipes are. */
const ROOT = new URL("../", import.meta.url);

if (import.meta.main) {
  try {
    const inputs = await readInputs(Deno.env.get("BOOK_DIR"), ROOT);
    const out = new URL("out", import.meta.url).pathname;
    console.log(await writePages(out, inputs));
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    console.error(error.message);
    Deno.exit(1);
  }
}
