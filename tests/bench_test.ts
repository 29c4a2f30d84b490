/**
 * The benchmark end to end: `deno task bench` (with the task's own
 * permissions) on one cheap scenario for one second, writing into a
 * throwaway folder, so the committed bench/results.* are never touched (a
 * test checks they are not). These tests check that the table, results.md
 * and the two charts come out well-formed and agree with each other; no test
 * asserts a speed. In-process: the module layout (no import cycle, nothing
 * shared imports a scenario, the map in bench.ts names every file) and
 * --save's hand-measured section.
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { bookScript, DENO, run } from "./harness.ts";
import { bookDir, bookSpec } from "../bench/book.ts";
import { Server } from "../bench/servers.ts";
import { exchange } from "../bench/net.ts";
import { givenBack } from "../bench/hold.ts";
import {
  HAND_MEASURED,
  keepHandMeasured,
  writeResults,
} from "../bench/files.ts";

const BENCH_MS = 180_000;

interface TableRow {
  scenario: string;
  server: string;
  load: string;
  rate: string;
  p50: string;
  /** "fewest / most" replies per connection against the mean, or "-". */
  fair: string;
  /** The load generator's share of its core, "37%", or "-". */
  cpu: string;
  errors: string;
  note: string;
}

/** The rows of the plain-text table (columns are two or more spaces apart). */
function stdoutRows(stdout: string): TableRow[] {
  const lines = stdout.split("\n");
  const header = lines.findIndex((l) =>
    /^scenario\s+server\s+load\s+rate\s+unit/.test(l)
  );
  assert(header >= 0, `no table header in:\n${stdout}`);
  assertMatch(lines[header + 1], /^-+(\s+-+){7}/);
  const rows: TableRow[] = [];
  for (const line of lines.slice(header + 2)) {
    if (line.trim() === "") break;
    const cells = line.split(/\s{2,}/);
    assert(cells.length >= 8, `a table line with too few cells: ${line}`);
    const [
      scenario,
      server,
      load,
      rate,
      ,
      p50,
      ,
      fair,
      cpu,
      errors,
      note = "",
    ] = cells;
    rows.push({ scenario, server, load, rate, p50, fair, cpu, errors, note });
  }
  return rows;
}

/** The rows of the markdown table in results.md. */
function markdownRows(md: string): TableRow[] {
  const all = md.split("\n");
  const header = all.findIndex((l) => l.startsWith("| scenario |"));
  assertMatch(
    all[header] ?? "",
    /^\| scenario \| server \| load \| rate \| unit \| p50 ms \| p99 ms \| fewest\/most \| load CPU \| errors \| notes \|$/,
  );
  const end = all.findIndex((l, i) => i > header && !l.startsWith("|"));
  const lines = all.slice(header + 2, end < 0 ? undefined : end);
  return lines.map((line) => {
    const cells = line.slice(2, -2).split(" | ");
    assertEquals(
      cells.length,
      11,
      `a markdown row with the wrong cell count: ${line}`,
    );
    const [scenario, server, load, rate, , p50, , fair, cpu, errors, note] =
      cells;
    return {
      scenario,
      server,
      load,
      rate,
      p50,
      fair,
      cpu,
      errors,
      note: note.replaceAll("\\|", "|"),
    };
  });
}

/** Checks the SVG is one well-formed <svg> element (tags balanced, attributes quoted). */
function assertWellFormedSvg(svg: string): void {
  assertMatch(
    svg,
    /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*width="\d+"[^>]*height="\d+"/,
  );
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>/y;
  let i = 0;
  while (i < svg.length) {
    const open = svg.indexOf("<", i);
    if (open < 0) break;
    tag.lastIndex = open;
    const m = tag.exec(svg);
    if (!m) {
      throw new Error(
        `malformed markup at ${open}: ${svg.slice(open, open + 60)}`,
      );
    }
    const [, closing, name, , selfClosing] = m;
    if (closing) {
      assertEquals(stack.pop(), name, `unbalanced </${name}> at ${open}`);
    } else if (!selfClosing) stack.push(name);
    i = tag.lastIndex;
    if (stack.length === 0) {
      assertEquals(svg.slice(i).trim(), "", "content after the root element");
      return;
    }
  }
  assertEquals(stack, [], "unclosed elements");
}

/** The text the chart draws (entities decoded). */
function svgTexts(svg: string): string[] {
  return [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) =>
    m[1].replaceAll("&amp;", "&").replaceAll("&lt;", "<").replaceAll(
      "&gt;",
      ">",
    ).replaceAll("&quot;", '"')
      .replaceAll("&#39;", "'")
  );
}

async function withOutDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "bench", prefix: ".test-out-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Splits the command bench.ts prints (words, or '...' quoted as a POSIX shell does). */
function shellWords(line: string): string[] {
  return [...line.matchAll(/'((?:[^']|'\\'')*)'|(\S+)/g)].map((m) =>
    m[1] !== undefined ? m[1].replaceAll("'\\''", "'") : m[2]
  );
}

/** The committed results, to show a run without --save leaves them alone. */
async function committedResults(): Promise<string[]> {
  return await Promise.all(
    ["bench/results.md", "bench/results.svg", "bench/results.ko.svg"].map((f) =>
      Deno.readTextFile(f).catch(() => "(absent)")
    ),
  );
}

/**
 * An --out outside bench/ is refused at once with a `deno run` command that
 * grants it; that command times 2_5, writes a table, results.md and results.svg
 * that agree, and leaves the committed bench/results.* alone.
 */
Deno.test("bench: an --out outside bench/ is refused before the run with the command that works; that command writes there, bench/results.* untouched", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-out-" });
  const before = await committedResults();
  try {
    const args = [
      "--seconds=1",
      "--warmup=0",
      "--only=2_5",
      "--vs=book",
      "--held=300",
      `--out=${dir}`,
    ];
    const began = performance.now();
    const refused = await run(DENO, ["task", "bench", ...args]);
    assertEquals(refused.code, 2, refused.stdout + refused.stderr);
    assert(
      !/^== /m.test(refused.stdout),
      `refused before any scenario ran:\n${refused.stdout}`,
    );
    assert(
      performance.now() - began < 10_000,
      "refused at once, not after the run",
    );
    const suggested = /\n {2}(deno run .+)$/m.exec(refused.stderr)?.[1];
    if (!suggested) {
      throw new Error(`no command to run instead in:\n${refused.stderr}`);
    }
    const words = shellWords(suggested);
    assert(
      words.some((w) => w.startsWith("--allow-write=") && w.includes(dir)),
      `the command grants ${dir}: ${suggested}`,
    );
    for (const arg of args) assert(words.includes(arg), `keeps ${arg}`);

    const result = await run(DENO, words.slice(1), { ms: BENCH_MS });
    assertEquals(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assertMatch(result.stdout, /^== 2_5 /m);
    assertMatch(result.stdout, /(Pinned with taskset|Not pinned to cores): /);

    const rows = stdoutRows(result.stdout);
    const ours = rows.filter((r) => r.server === "2_5 (ours)");
    assertEquals(ours.map((r) => r.load), [
      "1 connection",
      "50 connections",
      "500 connections",
      "300 held open",
    ]);
    const [one, fifty, fiveHundred, held] = ours;
    assertEquals(one.fair, "-", "one connection has no fairness figures");
    for (const row of [fifty, fiveHundred]) {
      const fair = /^(\d+\.\d\d) \/ (\d+\.\d\d)$/.exec(row.fair);
      if (!fair) {
        throw new Error(`no fewest / most against the mean: ${row.fair}`);
      }
      assert(Number(fair[1]) <= 1 && Number(fair[2]) >= 1, row.fair);
    }
    for (const row of [one, fifty, fiveHundred]) {
      assertMatch(row.cpu, /^\d+%$/, "the generator's CPU was measured");
      const bound = Number(row.cpu.slice(0, -1)) >= 90;
      assertEquals(/load-bound/.test(row.note), bound, row.note);
    }
    assertMatch(held.rate, /^\d[\d,]*\.?\d*$/, "KB per connection measured");
    assertMatch(held.note, /^300 held, (PSS|RSS)/);
    for (const row of [one, fifty, fiveHundred]) {
      assertMatch(
        row.rate,
        /^[\d,]+$/,
        `2_5 was timed: ${JSON.stringify(row)}`,
      );
      assert(
        Number(row.rate.replaceAll(",", "")) > 0,
        "some round trips completed",
      );
      assertMatch(row.errors, /^\d+$/);
    }
    const peer = rows.filter((r) => r.server === "Node net (peer)");
    assertEquals(
      peer.length,
      4,
      "the Node peer has its rows (timed, or MISSING without node)",
    );
    const book = rows.filter((r) => r.server === "2_5 (book, Python)");
    assertEquals(book.map((r) => r.rate), Array(4).fill("SKIPPED"));
    for (const row of book) assertMatch(row.note, /diesel.*Python 3/);
    assert(rows.every((r) => r.scenario === "2_5"));

    const md = await Deno.readTextFile(`${dir}/results.md`);
    assertMatch(md, /^# Benchmark results\n/);
    assertMatch(md, /!\[[^\]]*\]\(results\.svg\)/);
    assertMatch(md, /Machine: \d+ cores/);
    assertMatch(
      md,
      new RegExp(`Deno ${Deno.version.deno.replaceAll(".", "\\.")}`),
    );
    assertMatch(md, /on \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    assertEquals(
      markdownRows(md),
      rows,
      "results.md has the same rows as the table on stdout",
    );

    const svg = await Deno.readTextFile(`${dir}/results.svg`);
    assertWellFormedSvg(svg);
    const texts = svgTexts(svg);
    for (
      const title of [
        "start one connection (ms)",
        "memory per connection (KB)",
        "served per second, one core",
        "2_5 · one event loop: echo",
        "ours (Deno)",
        ...(/^[\d,]+$/.test(peer[0].rate) ? ["Node net"] : []),
      ]
    ) {
      assert(texts.includes(title), `the chart shows "${title}"`);
    }
    const best = Math.max(
      ...[one, fifty, fiveHundred].map((r) =>
        Number(r.rate.replaceAll(",", ""))
      ),
    ).toLocaleString("en-US");
    assert(
      texts.includes(`${best} round trips/s`),
      `the chart labels ours with its best rate, ${best} round trips/s`,
    );
    assert(
      texts.includes(`${held.rate} KB`),
      `the chart labels ours with its memory, ${held.rate} KB`,
    );
    assert(
      texts.includes(`${held.p50} ms`),
      `the chart labels ours with its start time, ${held.p50} ms`,
    );
    const ko = await Deno.readTextFile(`${dir}/results.ko.svg`);
    assertWellFormedSvg(ko);
    const koTexts = svgTexts(ko);
    for (
      const title of [
        "연결 하나 시작 (ms)",
        "연결당 메모리 (KB)",
        "코어 하나가 초당 처리하는 양",
        "2_5 · 하나의 이벤트 루프: 에코",
        "이식판 (Deno)",
      ]
    ) {
      assert(koTexts.includes(title), `the Korean chart shows "${title}"`);
    }
    assert(
      koTexts.includes(`${best} 왕복/초`),
      `the Korean chart labels ours with its best rate, ${best} 왕복/초`,
    );
    // Korean glyphs from whichever font the reader has, a generic family last.
    assertMatch(ko, /font-family="[^"]*Noto Sans CJK KR[^"]*sans-serif"/);
    assertEquals(
      await committedResults(),
      before,
      "without --save, the committed bench/results.* are unchanged",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * By default the results go to bench/out/, as --help says, and .gitignore keeps
 * that folder out of commits.
 */
Deno.test("bench: the default output folder, bench/out/, is ignored by git", async () => {
  const help = await run(DENO, ["task", "bench", "--help"]);
  assertMatch(help.stdout, /--out DIR .*\(default: bench\/out/);
  assertMatch(help.stdout, /--save /);
  const ignored = (await Deno.readTextFile(".gitignore")).split("\n");
  assert(ignored.includes("bench/out/"), ".gitignore lists bench/out/");
});

/**
 * A --vs server that does not echo fails its check and is not timed: its rows
 * say FAILED, while ours are timed and the files still written.
 */
Deno.test("bench: a --vs server that fails its check is reported FAILED, not timed", async () => {
  await withOutDir(async (dir) => {
    // An HTTP server is no echo server: it closes without answering the lines.
    const vs =
      "deno run --quiet --allow-net=127.0.0.1 bench/peers/deno_http.ts --port={port}";
    const result = await run(DENO, [
      "task",
      "bench",
      "--seconds=1",
      "--warmup=0",
      "--only=2_5",
      "--held=100",
      `--vs=${vs}`,
      `--out=${dir}`,
    ], {
      ms: BENCH_MS,
    });
    assertEquals(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const rows = stdoutRows(result.stdout);
    const other = rows.filter((r) => r.server.startsWith("vs: deno run"));
    assertEquals(other.length, 4);
    for (const row of other) {
      assertEquals(row.rate, "FAILED");
      assertEquals(row.errors, "-");
    }
    assertMatch(result.stdout, /FAILED.*check/);
    assertEquals(rows.filter((r) => r.server === "2_5 (ours)").length, 4);
    assertEquals(
      markdownRows(await Deno.readTextFile(`${dir}/results.md`)),
      rows,
    );
    assertWellFormedSvg(await Deno.readTextFile(`${dir}/results.svg`));
  });
});

/**
 * Each bad option prints the usage and one error line and exits 2; --help exits
 * 0 with the usage.
 */
Deno.test("bench: bad arguments print the usage and exit 2", async () => {
  for (
    const bad of [
      ["--seconds=0"],
      ["--seconds=fast"],
      ["--warmup=-1"],
      ["--held=0"],
      ["--only=9_9"],
      ["--vs=python3 server.py"],
      ["--vs=python3 server.py --port={port}"],
      ["--vs-frame=xml"],
      ["--bogus"],
    ]
  ) {
    const result = await run(DENO, ["task", "bench", ...bad]);
    assertEquals(
      result.code,
      2,
      `exit code for ${bad}: ${result.stdout}${result.stderr}`,
    );
    assertMatch(
      result.stderr,
      /usage: bench\.ts .*\nbench\.ts: error: .+/,
      `stderr for ${bad}`,
    );
  }
  const help = await run(DENO, ["task", "bench", "--help"]);
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /usage: bench\.ts .*--only NAMES/);
});

/** `--vs=book` says why it skips what it cannot run: no BOOK_DIR, no such script, or 2_5's diesel. */
Deno.test("bench: the book's scripts that cannot run are skipped with the reason", async () => {
  assertMatch(
    (await bookSpec("2_1", undefined)).skip ?? "",
    /BOOK_DIR is not set/,
  );
  assertMatch(
    (await bookSpec("2_4", undefined)).skip ?? "",
    /BOOK_DIR is not set/,
  );
  assertMatch((await bookSpec("2_5", "/any")).skip ?? "", /diesel.*Python 3/);
  if (bookScript("2_1_forking_mixin_socket_server.py").path) {
    assertMatch(
      (await bookSpec("2_1", "/nonexistent-book")).skip ?? "",
      /no 2_1_forking_mixin_socket_server\.py in BOOK_DIR/,
    );
  }
});

/** The book's 2_1 and 2_2 run a demo and exit; the wrapper serves their own server classes on a port. */
for (
  const [id, file, reply] of [
    ["2_1", "2_1_forking_mixin_socket_server.py", /^\d+: Hello echo server!$/],
    [
      "2_2",
      "2_2_threading_mixin_socket_server.py",
      /^Thread-\d+.*: b'Hello echo server!'$/,
    ],
  ] as const
) {
  const script = bookScript(file);
  Deno.test({
    name: `bench: --vs=book serves the book's ${id} server class (${
      script.skip ?? "BOOK_DIR"
    })`,
    ignore: script.skip !== undefined,
    async fn() {
      const spec = await bookSpec(id, bookDir());
      assertEquals(spec.skip, undefined);
      const server = await Server.start(spec, []);
      try {
        for (let i = 0; i < 2; i++) {
          assertMatch(await exchange(server.port, "Hello echo server!"), reply);
        }
      } finally {
        await server.stop();
      }
    },
  });
}

/** Samples of a server's memory, in KB, one per call; the last one repeats. */
function samples(...kb: number[]) {
  let next = 0;
  return () => {
    const value = kb[Math.min(next, kb.length - 1)];
    next += 1;
    return Promise.resolve({ kb: value, measure: "PSS", processes: 1 });
  };
}

/** The 2_3 memory row waits for V8 to give back a burst's heap: it takes the figure once the growth has fallen and holds, and says when nothing was given back. */
Deno.test("bench: the idle wait after the join notices takes the memory once it has fallen and holds", async () => {
  const before = { kb: 100_000, measure: "PSS", processes: 1 };
  const peak = { kb: 180_000, measure: "PSS", processes: 1 };
  // Flat at the peak for three samples, then down to a growth of 20,000 KB.
  const fell = await givenBack(
    samples(180_000, 180_000, 180_000, 120_500, 120_000),
    before,
    peak,
    1_000,
    1,
  );
  assertEquals(
    fell.memory.kb,
    120_000,
    "the first steady sample after the fall",
  );
  assert(fell.seconds !== undefined, "a fall is reported with its time");
  // A fall that does not hold yet is not taken.
  const settling = await givenBack(
    samples(150_000, 110_000, 110_000),
    before,
    peak,
    1_000,
    1,
  );
  assertEquals(settling.memory.kb, 110_000);
  // Never given back: the last sample, and no time.
  const kept = await givenBack(samples(180_000), before, peak, 50, 1);
  assertEquals(kept.memory.kb, 180_000);
  assertEquals(kept.seconds, undefined);
  // The process gone: what was last seen, and no time.
  const gone = await givenBack(
    () => Promise.resolve(undefined),
    before,
    peak,
    1_000,
    1,
  );
  assertEquals(gone.memory.kb, peak.kb);
  assertEquals(gone.seconds, undefined);
});

/** A module as `deno info --json` lists it: what it imports, as code or as types. */
interface InfoModule {
  specifier: string;
  dependencies?: {
    code?: { specifier?: string };
    type?: { specifier?: string };
  }[];
}

/** The local modules `deno info` finds from bench/bench.ts, each with what it imports (type-only too). */
async function benchGraph(): Promise<Map<string, string[]>> {
  const info = await run(DENO, ["info", "--json", "bench/bench.ts"]);
  assertEquals(info.code, 0, info.stderr);
  const root = new URL("../", import.meta.url).href;
  const local = (specifier?: string) =>
    specifier?.startsWith(root) ? specifier.slice(root.length) : undefined;
  const graph = new Map<string, string[]>();
  const modules: InfoModule[] = JSON.parse(info.stdout).modules;
  for (const module of modules) {
    const from = local(module.specifier);
    if (!from) continue;
    const to = (module.dependencies ?? []).flatMap((d) => [
      local(d.code?.specifier),
      local(d.type?.specifier),
    ]).filter((s): s is string => s !== undefined);
    graph.set(from, [...new Set(to)]);
  }
  return graph;
}

/** A cycle in `graph` as its path ("a -> b -> a"), or undefined. */
function findCycle(graph: Map<string, string[]>): string | undefined {
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string): string | undefined => {
    if (state.get(node) === "done") return undefined;
    if (state.get(node) === "open") {
      return [...path.slice(path.indexOf(node)), node].join(" -> ");
    }
    state.set(node, "open");
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(node, "done");
    return undefined;
  };
  for (const node of graph.keys()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return undefined;
}

Deno.test("bench: the cycle finder finds a cycle, type-only or not, and passes a tree", () => {
  const tree = new Map([["a", ["b", "c"]], ["b", ["c"]], ["c", []]]);
  assertEquals(findCycle(tree), undefined);
  const loop = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]]]);
  assertEquals(findCycle(loop), "a -> b -> c -> a");
});

/**
 * The layout issue 22 asks for: no import cycle among bench/'s modules
 * (type-only imports count), no shared module imports a scenario, and the
 * map in bench.ts's header names every file in bench/.
 */
Deno.test("bench: no import cycle, shared modules import no scenario, bench.ts maps the folder", async () => {
  const graph = await benchGraph();
  assert(graph.has("bench/scenarios/2_3_chat.ts"), [...graph.keys()].join());
  assertEquals(findCycle(graph), undefined, "an import cycle in bench/");
  for (const [from, to] of graph) {
    if (from === "bench/bench.ts" || from.startsWith("bench/scenarios/")) {
      continue;
    }
    const scenarios = to.filter((m) => m.startsWith("bench/scenarios/"));
    assertEquals(scenarios, [], `${from} is shared but imports a scenario`);
  }
  const header = (await Deno.readTextFile("bench/bench.ts")).split("*/")[0];
  const files: string[] = [];
  for (const folder of ["bench", "bench/scenarios"]) {
    for await (const entry of Deno.readDir(folder)) {
      if (entry.isFile && /\.(ts|py)$/.test(entry.name)) {
        files.push(entry.name);
      }
    }
  }
  for (const file of files) {
    assert(header.includes(file), `bench.ts's map names ${file}`);
  }
});

/** --save keeps the committed results.md's hand-measured section; other files and --out are written as they are. */
Deno.test("bench: --save carries the hand-measured section over into the new results.md", async () => {
  const section =
    `${HAND_MEASURED}\n\n## 2_5 fairness under the C load generator\n\n| a | b |\n|---|---|\n| 1 | 2 |\n`;
  const old = `# Benchmark results\n\nold table\n\n${section}`;
  const fresh = "# Benchmark results\n\nnew table\n";
  const kept = keepHandMeasured(fresh, old);
  assertEquals(kept, `# Benchmark results\n\nnew table\n\n${section}`);
  assertEquals(keepHandMeasured(fresh, kept), kept, "saved again: one section");
  assertEquals(keepHandMeasured(fresh, "# no section here\n"), fresh);
  assertEquals(keepHandMeasured(fresh, undefined), fresh);
  // The marker only counts as a line of its own.
  assertEquals(keepHandMeasured(fresh, `text ${HAND_MEASURED}\n`), fresh);

  const dir = await Deno.makeTempDir({ prefix: "bench-save-" });
  try {
    await Deno.writeTextFile(`${dir}/results.md`, old);
    const results = { "results.md": fresh, "results.svg": "<svg/>" };
    await writeResults(dir, results, true);
    assertEquals(await Deno.readTextFile(`${dir}/results.md`), kept);
    assertEquals(await Deno.readTextFile(`${dir}/results.svg`), "<svg/>");
    // Saved again: the section is there once, not twice.
    await writeResults(dir, results, true);
    assertEquals(await Deno.readTextFile(`${dir}/results.md`), kept);
    // Without keep (--out): the fresh file alone.
    await writeResults(dir, results, false);
    assertEquals(await Deno.readTextFile(`${dir}/results.md`), fresh);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
