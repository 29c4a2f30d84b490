/**
 * The outline that pairs a book script with its port: which lines of the
 * book's Python are code, and which `// book:` markers of a recipe quote them.
 *
 * The one marker form, used in all five recipes:
 *
 *     // book: <one code line of the book's script, word for word>
 *
 * alone on its line (indentation aside), at the Deno code that does what that
 * line did. Several consecutive book lines are quoted by consecutive markers.
 * Every code line of the book's script (not blank, not a comment, not a
 * docstring) is quoted exactly once, in the book's order; whitespace aside,
 * the quote is the line itself, comments after the code included.
 *
 * What the port adds opens with a section heading at column 0:
 *
 *     // --- Not in the book: <what the section is> ---
 *
 * Used by tests/outline_test.ts (the outline is complete and in order) and by
 * the side-by-side page generator (side_by_side/side_by_side.ts).
 */

/** One physical line of the book's script and what it is. */
export interface BookLine {
  /** 1-based line number in the script. */
  line: number;
  text: string;
  kind: "code" | "comment" | "blank" | "docstring";
}

/** One `// book:` marker of a recipe. */
export interface Marker {
  /** 1-based line number in the recipe. */
  line: number;
  /** What it quotes, as written after `// book: `. */
  quote: string;
}

/** One `// --- ... ---` section heading of a recipe. */
export interface Heading {
  line: number;
  title: string;
}

/** A marker that is not where the outline needs it. */
export interface OutlineError {
  marker?: Marker;
  message: string;
}

/** Whitespace aside: runs of blanks fold to one space, ends trimmed. */
export function normalize(text: string): string {
  return text.trim().replace(/\s+/g, " ");
}

/**
 * Classifies each line of a Python script. A docstring is a triple-quoted
 * string that is the first thing on its logical line (not the value of an
 * assignment, such as 2_4's multi-line SERVER_RESPONSE, whose lines are code).
 * Strings are scanned, so `"""` inside `" x """` (a string and an empty one)
 * opens nothing.
 */
export function bookLines(python: string): BookLine[] {
  const lines = python.replace(/\r\n/g, "\n").replace(/\n$/, "").split("\n");
  const result: BookLine[] = [];
  /** The quote that closes the string a line break is inside, if any. */
  let openString: string | null = null;
  let inDocstring = false;
  /** Open brackets, or a trailing backslash: the next line continues this one. */
  let depth = 0;
  let continued = false;
  for (const [index, text] of lines.entries()) {
    const trimmed = text.trim();
    let kind: BookLine["kind"];
    if (openString !== null) {
      kind = inDocstring ? "docstring" : "code";
    } else if (trimmed === "") {
      kind = "blank";
    } else if (trimmed.startsWith("#")) {
      kind = "comment";
    } else if (
      depth === 0 && !continued &&
      /^[rRuUbB]{0,2}("""|''')/.test(trimmed)
    ) {
      kind = "docstring";
      inDocstring = true;
    } else {
      kind = "code";
    }
    // Scan the line for strings, comments and brackets.
    continued = false;
    let i = 0;
    while (i < text.length) {
      if (openString !== null) {
        if (text[i] === "\\") {
          i += 2;
          continue;
        }
        if (text.startsWith(openString, i)) {
          i += openString.length;
          openString = null;
          inDocstring = false;
          continue;
        }
        i++;
        continue;
      }
      const c = text[i];
      if (c === "#") break;
      if (c === '"' || c === "'") {
        const triple = c.repeat(3);
        openString = text.startsWith(triple, i) ? triple : c;
        i += openString.length;
        continue;
      }
      if ("([{".includes(c)) depth++;
      if (")]}".includes(c)) depth = Math.max(0, depth - 1);
      if (c === "\\" && i === text.length - 1) continued = true;
      i++;
    }
    // A single-quoted string cannot span lines (without a backslash).
    if (openString !== null && openString.length === 1) openString = null;
    result.push({ line: index + 1, text, kind });
  }
  return result;
}

/** The code lines of a book script, in order. */
export function bookCode(python: string): BookLine[] {
  return bookLines(python).filter((l) => l.kind === "code");
}

const MARKER = /^\s*\/\/ book: (.*)$/;
const HEADING = /^\/\/ --- (.*?) -*$/;

/** Every `// book:` marker of a recipe, in order. */
export function markers(typescript: string): Marker[] {
  return typescript.split("\n").flatMap((text, index) => {
    const match = MARKER.exec(text);
    return match ? [{ line: index + 1, quote: match[1] }] : [];
  });
}

/** Every `// --- ... ---` section heading of a recipe, in order. */
export function headings(typescript: string): Heading[] {
  return typescript.split("\n").flatMap((text, index) => {
    const match = HEADING.exec(text);
    return match ? [{ line: index + 1, title: match[1].trim() }] : [];
  });
}

/**
 * Lines that mention a book marker in some other form (`/** book: ...`, a
 * marker after code on the same line): the one form must be used throughout.
 */
export function strayMarkers(typescript: string): Marker[] {
  return typescript.split("\n").flatMap((text, index) =>
    /(\/\/|\/\*\*?|\*)\s*book:/.test(text) && !MARKER.test(text)
      ? [{ line: index + 1, quote: text.trim() }]
      : []
  );
}

/**
 * Pairs the markers with the book's code lines: the n-th marker must quote
 * the n-th code line. Returns the pairs, and what is wrong, first problem
 * first: a marker quoting a line the book does not have, a marker out of the
 * book's order, or book lines no marker quotes.
 */
export function pairOutline(
  book: BookLine[],
  marks: Marker[],
): { pairs: { book: BookLine; marker: Marker }[]; errors: OutlineError[] } {
  const pairs: { book: BookLine; marker: Marker }[] = [];
  const errors: OutlineError[] = [];
  const known = new Set(book.map((l) => normalize(l.text)));
  let next = 0;
  for (const marker of marks) {
    const quote = normalize(marker.quote);
    if (!known.has(quote)) {
      errors.push({
        marker,
        message: `line ${marker.line} quotes a line the book's script ` +
          `does not have: ${JSON.stringify(marker.quote)}`,
      });
      continue;
    }
    const expected = book[next];
    if (expected && normalize(expected.text) === quote) {
      pairs.push({ book: expected, marker });
      next++;
      continue;
    }
    // Out of order: find it further on (skipping lines not yet quoted) or
    // behind (quoted twice, or too late).
    const ahead = book.findIndex((l, i) =>
      i > next && normalize(l.text) === quote
    );
    const expectedText = expected
      ? `book line ${expected.line}, ${
        JSON.stringify(normalize(expected.text))
      }`
      : "no more book lines";
    errors.push({
      marker,
      message: ahead >= 0
        ? `line ${marker.line} quotes book line ${book[ahead].line} ` +
          `(${JSON.stringify(quote)}) before ${expectedText} is quoted`
        : `line ${marker.line} quotes ${JSON.stringify(quote)} out of the ` +
          `book's order (the next book line is ${expectedText})`,
    });
    if (ahead >= 0) {
      pairs.push({ book: book[ahead], marker });
      next = ahead + 1;
    }
  }
  for (const line of book.slice(next)) {
    errors.push({
      message: `book line ${line.line} is not quoted: ` +
        JSON.stringify(normalize(line.text)),
    });
  }
  return { pairs, errors };
}
