/**
 * The chart (results.svg, and results.ko.svg with Korean labels for
 * README.ko.md), drawn by vega-lite: compiled to a vega spec and rendered to
 * SVG headless (no browser, no canvas). Per model (a process per connection,
 * a thread per connection, one event loop for chat, web and echo), what one
 * connection costs to start and to hold, and what one core serves per
 * second; each quantity on one logarithmic axis shared by every model, so
 * orders of magnitude show as lengths.
 */

import * as vega from "vega";
import * as vegaLite from "vega-lite";
import type { Cost } from "./costs.ts";
import {
  formatKb,
  formatMs,
  formatRate,
  type Machine,
  type Row,
} from "./report.ts";

export type Language = "en" | "ko";

type Who = "ours" | "book" | "peer" | "vs" | "floor";
type Quantity = "start" | "memory" | "rate";

/** Every word the chart shows, in one language. */
interface Labels {
  /** The models, one row group each, in the chapter's order. */
  models: Record<string, string>;
  /** The legend: who served a bar. */
  who: Record<Who, string>;
  /** A bar's name: ours, the book's script (a peer keeps its own name). */
  ours: string;
  book: string;
  floor: (label: string) => string;
  /** The three axes' titles. */
  axes: Record<Quantity, string>;
  /** A rate's unit as the chart writes it, from the scenario's unit. */
  unit: (unit: string) => string;
  /** Fewer held than asked for. */
  onlyHeld: (held: string) => string;
  title: string;
  subtitle: (machine: Machine, untimed: string[]) => string[];
  /** A row's status as the subtitle's "not measured" list says it. */
  status: Record<Row["status"], string>;
  /** Fonts to try in order; a generic family last. */
  font: string;
}

const ENGLISH: Labels = {
  models: {
    "2_1": "2_1 · a process per connection",
    "2_2": "2_2 · a thread per connection",
    "2_3": "2_3 · one event loop: chat",
    "2_4": "2_4 · one event loop: web",
    "2_5": "2_5 · one event loop: echo",
  },
  who: {
    ours: "ours (Deno)",
    book: "the book (Python)",
    peer: "a peer",
    vs: "--vs server",
    floor: "the mechanism's floor",
  },
  ours: "ours (Deno)",
  book: "the book's script (Python)",
  floor: (label) => `floor: ${label}`,
  axes: {
    start: "start one connection (ms)",
    memory: "memory per connection (KB)",
    rate: "served per second, one core",
  },
  unit: (unit) => unit,
  onlyHeld: (held) => `only ${held} held`,
  title:
    "What one connection costs, per model (logarithmic axes: each gridline is 10x)",
  subtitle: (machine, untimed) => [
    "Start: connect to the first reply. Memory: the server's growth per connection held open (PSS). Served: the best rate its one core reached.",
    `${machine.date}, ${machine.cores} cores, Deno ${machine.deno}, ${machine.seconds} s per run. Shorter is cheaper on the first two axes; longer is more on the third.`,
    ...(untimed.length ? [`Not measured: ${untimed.join(", ")}`] : []),
  ],
  status: {
    ok: "ok",
    failed: "failed",
    missing: "missing",
    skipped: "skipped",
  },
  font: "sans-serif",
};

/** The mechanisms' floors in Korean, by their English label (costs.ts). */
const FLOORS_KO: Record<string, string> = {
  "a bare Deno process": "빈 Deno 프로세스",
  "a bare Worker": "빈 Worker",
  "Python's fork()": "파이썬의 fork()",
  "a Python thread": "파이썬 스레드",
};

/** The scenarios' units in Korean. */
const UNITS_KO: Record<string, string> = {
  "connections/s": "연결/초",
  "requests/s": "요청/초",
  "deliveries/s": "전달/초",
  "round trips/s": "왕복/초",
  "/s": "/초",
};

const KOREAN: Labels = {
  models: {
    "2_1": "2_1 · 연결마다 프로세스 하나",
    "2_2": "2_2 · 연결마다 스레드 하나",
    "2_3": "2_3 · 하나의 이벤트 루프: 채팅",
    "2_4": "2_4 · 하나의 이벤트 루프: 웹",
    "2_5": "2_5 · 하나의 이벤트 루프: 에코",
  },
  who: {
    ours: "이식판 (Deno)",
    book: "책 (파이썬)",
    peer: "비교 대상",
    vs: "--vs 서버",
    floor: "메커니즘의 바닥값",
  },
  ours: "이식판 (Deno)",
  book: "책의 스크립트 (파이썬)",
  floor: (label) => `바닥값: ${FLOORS_KO[label] ?? label}`,
  axes: {
    start: "연결 하나 시작 (ms)",
    memory: "연결당 메모리 (KB)",
    rate: "코어 하나가 초당 처리하는 양",
  },
  unit: (unit) => UNITS_KO[unit] ?? unit,
  onlyHeld: (held) => `${held}개만 유지`,
  title: "모델별로 연결 하나에 드는 비용 (로그 축: 눈금 하나가 10배)",
  subtitle: (machine, untimed) => [
    "시작: 연결부터 첫 응답까지. 메모리: 열어 둔 연결 하나당 서버 메모리 증가분(PSS). 처리량: 코어 하나로 낸 가장 높은 처리율.",
    `${machine.date}, 코어 ${machine.cores}개, Deno ${machine.deno}, 실행마다 ${machine.seconds}초. 앞의 두 축은 짧을수록 가볍고, 세 번째 축은 길수록 많습니다.`,
    ...(untimed.length ? [`측정하지 못함: ${untimed.join(", ")}`] : []),
  ],
  status: { ok: "정상", failed: "실패", missing: "없음", skipped: "건너뜀" },
  // Korean glyphs: the fonts Korean readers' systems have, a generic family last.
  font:
    "'Noto Sans CJK KR', 'Noto Sans KR', 'Apple SD Gothic Neo', 'Malgun Gothic', NanumGothic, sans-serif",
};

const LABELS: Record<Language, Labels> = { en: ENGLISH, ko: KOREAN };

const COLORS: Record<Who, string> = {
  ours: "#4c78a8",
  book: "#f58518",
  peer: "#a0a0a0",
  vs: "#e45756",
  floor: "#72b7b2",
};

const MODEL_IDS = ["2_1", "2_2", "2_3", "2_4", "2_5"];
const QUANTITIES: Quantity[] = ["start", "memory", "rate"];

/** A row of the chart: `key` is "model|label" ("model|#title" for a model's heading). */
export interface ChartRow {
  key: string;
  who?: Who;
  start?: number;
  memory?: number;
  rate?: number;
  unit?: string;
  /** Fewer held than asked for: "1,000". */
  short?: string;
}

/** 1, 10, 100, ... from `low` to `high`. */
function powersOfTen([low, high]: [number, number]): number[] {
  const out: number[] = [];
  for (let v = low; v <= high * 1.001; v *= 10) {
    out.push(Number(v.toPrecision(1)));
  }
  return out;
}

/** "2_4 (ours)" -> "ours (Deno)", "Node http (peer)" -> "Node http". */
function shortName(row: Row, labels: Labels): string {
  if (row.kind === "ours") return labels.ours;
  if (row.kind === "book") return labels.book;
  return row.server.replace(/ \(peer\)$/, "");
}

/** One server's bar: its start and memory (the held row), its best rate. */
function serverRow(model: string, mine: Row[], labels: Labels): ChartRow {
  const held = mine.find((r) => r.held !== undefined);
  const timed = mine.filter((r) => r.held === undefined && r.rate);
  const best = timed.sort((a, b) => (b.rate ?? 0) - (a.rate ?? 0))[0];
  const wanted = Number(held?.load.replace(/\D/g, ""));
  const short = held?.held !== undefined && held.held < wanted;
  return {
    key: `${model}|${shortName(mine[0], labels)}`,
    who: mine[0].kind,
    start: held?.p50,
    memory: held?.rate,
    rate: best?.rate,
    unit: best?.unit,
    short: short ? held.held?.toLocaleString("en-US") : undefined,
  };
}

/** Per model: a heading, then each server's three figures, then the mechanism's floors. */
export function chartRows(
  rows: Row[],
  costs: Cost[] = [],
  language: Language = "en",
): ChartRow[] {
  const labels = LABELS[language];
  const out: ChartRow[] = [];
  for (const model of MODEL_IDS) {
    const of = rows.filter((r) => r.scenario === model && r.status === "ok");
    const floors = costs.filter((c) => c.model === model);
    if (of.length === 0 && floors.length === 0) continue;
    out.push({ key: `${model}|#${labels.models[model]}` });
    for (const server of [...new Set(of.map((r) => r.server))]) {
      const mine = of.filter((r) => r.server === server);
      out.push(serverRow(model, mine, labels));
    }
    for (const floor of floors) {
      out.push({
        key: `${model}|${labels.floor(floor.label)}`,
        who: "floor",
        start: floor.ms,
        memory: floor.kb,
      });
    }
  }
  return out;
}

/** A bar's label: "12.3 ms", "5.1 KB (only 1,000 held)", "45,000 round trips/s". */
function barText(row: ChartRow, q: Quantity, value: number, labels: Labels) {
  if (q === "start") return `${formatMs(value)} ms`;
  if (q === "memory") {
    const kb = `${formatKb(value)} KB`;
    return row.short ? `${kb} (${labels.onlyHeld(row.short)})` : kb;
  }
  return row.unit
    ? `${formatRate(value)} ${labels.unit(row.unit)}`
    : `${formatRate(value)}${labels.unit("/s")}`;
}

/** The chart's data: one value per bar and quantity, with its label. */
interface Bar {
  key: string;
  who: string;
  quantity: Quantity;
  value: number;
  text: string;
}

function bars(chart: ChartRow[], labels: Labels): Bar[] {
  return chart.flatMap((r) =>
    QUANTITIES.flatMap((q) => {
      const value = r[q];
      if (value === undefined || !(value > 0) || !r.who) return [];
      const text = barText(r, q, value, labels);
      return [{ key: r.key, who: labels.who[r.who], quantity: q, value, text }];
    })
  );
}

/**
 * An axis's span: whole powers of ten around its figures, with room right
 * of the longest bar for its label.
 */
function decades(values: Bar[], q: Quantity): [number, number] {
  const of = values.filter((v) => v.quantity === q).map((v) => v.value);
  if (of.length === 0) return [1, 10];
  // A decade below the smallest when it sits on a power of ten, so its bar shows.
  const low = 10 ** Math.floor(Math.log10(Math.min(...of)) - 0.3);
  const high = 10 ** Math.ceil(Math.log10(Math.max(...of) * 30));
  return [low, Math.max(high, low * 10)];
}

/** The y axis: the first column shows the labels (a model's heading in bold). */
function yAxis(first: boolean) {
  if (!first) return { labels: false, ticks: false, domain: false };
  return {
    labelExpr: "replace(split(datum.label, '|')[1], '#', '')",
    labelFontWeight: {
      condition: { test: "indexof(datum.label, '|#') >= 0", value: "bold" },
      value: "normal",
    },
    labelLimit: 320,
    labelFontSize: 11,
    ticks: false,
    domain: false,
  };
}

/** One quantity's column: a bar and its label per server, on a log axis. */
function column(
  q: Quantity,
  first: boolean,
  data: { keys: string[]; values: Bar[]; present: Who[] },
  labels: Labels,
): vegaLite.TopLevelSpec {
  const span = decades(data.values, q);
  return {
    width: 250,
    height: { step: 17 },
    transform: [{ filter: { field: "quantity", equal: q } }],
    layer: [
      { mark: { type: "bar", height: 12 } },
      {
        mark: { type: "text", align: "left", dx: 3, fontSize: 10 },
        encoding: { text: { field: "text" } },
      },
    ],
    encoding: {
      y: {
        field: "key",
        type: "nominal",
        sort: null,
        scale: { domain: data.keys },
        title: null,
        axis: yAxis(first),
      },
      x: {
        field: "value",
        type: "quantitative",
        stack: null,
        scale: { type: "log", domain: span, nice: false },
        title: labels.axes[q],
        axis: {
          orient: "top",
          labelExpr:
            "datum.value < 1 ? format(datum.value, '') : format(datum.value, '~s')",
          grid: true,
          values: powersOfTen(span),
          titleFontSize: 12,
        },
      },
      color: {
        field: "who",
        type: "nominal",
        title: null,
        scale: {
          domain: data.present.map((w) => labels.who[w]),
          range: data.present.map((w) => COLORS[w]),
        },
        legend: { orient: "bottom", direction: "horizontal", labelLimit: 300 },
      },
    },
  } as unknown as vegaLite.TopLevelSpec;
}

/** The whole chart in `language`: the title, then the three columns side by side. */
export function chartSpec(
  rows: Row[],
  machine: Machine,
  costs: Cost[] = [],
  language: Language = "en",
): vegaLite.TopLevelSpec {
  const labels = LABELS[language];
  const chart = chartRows(rows, costs, language);
  const values = bars(chart, labels);
  const present = (Object.keys(COLORS) as Who[]).filter((w) =>
    values.some((v) => v.who === labels.who[w])
  );
  const data = { keys: chart.map((r) => r.key), values, present };
  const untimed = [
    ...new Set(
      rows.filter((r) => r.status !== "ok").map((r) =>
        `${r.server} ${labels.status[r.status]}`
      ),
    ),
  ];
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: labels.title,
      subtitle: labels.subtitle(machine, untimed),
      anchor: "start",
      subtitleFontSize: 11,
    },
    data: { values },
    hconcat: QUANTITIES.map((q, i) => column(q, i === 0, data, labels)),
    spacing: 24,
    config: { font: labels.font, view: { stroke: null } },
  } as unknown as vegaLite.TopLevelSpec;
}

/** The chart as SVG text, in `language`. */
export async function chartSvg(
  rows: Row[],
  machine: Machine,
  costs: Cost[] = [],
  language: Language = "en",
): Promise<string> {
  // Errors only: vega-lite warns that the panels' independent scales share
  // field names, which is what we want (each scenario has its own unit).
  const logger = vega.logger(vega.Error);
  const spec = chartSpec(rows, machine, costs, language);
  const compiled = vegaLite.compile(spec, { logger }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
