/**
 * The memory scenario's path, shared by every scenario's held-open load:
 * what one open connection costs a server. N connections are opened and
 * each is served once by the scenario's HoldProtocol (a line echoed, a chat
 * name answered), then held open; the server's memory growth divided by N
 * is its memory per connection. "The server's memory" is its whole process
 * tree (2_1's handler processes too), PSS where /proc has it (bench/proc.ts).
 *
 * Before that, the first START_SAMPLES connections are made one at a time,
 * each served once and closed: their median time from connect to the first
 * reply is the cost of starting one connection (a process, a Worker, or a
 * little state in one loop).
 *
 * Imports nothing of a scenario: each scenario module brings its protocol.
 */

import { connect, Watchdog } from "./net.ts";
import { openFileLimit, type TreeMemory, treeMemory } from "./proc.ts";
import { errorKind, median } from "./stats.ts";

/** Connections made one at a time to time a connection's start. */
export const START_SAMPLES = 40;
/** Connections opened at once while filling up to N. */
const BATCH = 100;
/** Opening stops here (the row says how many were held by then). */
const OPEN_BUDGET_MS = 25_000;
/** Connections between two memory snapshots while opening. */
const SNAPSHOT_EVERY = 500;
/** How long the server's memory may take to settle once all are open. */
const SETTLE_MS = 4_000;
/**
 * How long an idle server may take to give back memory a burst grew (2_3's
 * join notices). V8 keeps a grown heap while the process is busy and
 * returns it when its memory reducer runs, some seconds after the process
 * went idle (7 to 15 s after 2,000 joins here), so a figure taken right
 * after the burst weighs the burst, not the clients.
 */
const IDLE_MS = 30_000;
/** A fall to this fraction of the growth or less counts as given back. */
const GIVEN_BACK = 0.9;
/** Descriptors left for everything else when the open-file limit caps N. */
const SPARE_FILES = 200;

/** What the memory scenario measured for one server. */
export interface HeldResult {
  /** Connections asked for and held when measured. */
  wanted: number;
  held: number;
  /** Server memory growth per held connection, in KB (undefined: not measured). */
  kbPerConnection?: number;
  measure?: string;
  /** Median ms from connect to the first reply over START_SAMPLES fresh connections. */
  startMs?: number;
  notes: string[];
}

/** How the memory scenario talks to one kind of server (each scenario module has its own). */
export interface HoldProtocol {
  /** One fresh connection served once and closed (timed for the start cost). */
  sample(port: number, dog: Watchdog): Promise<void>;
  /** One connection served once (where the protocol allows) and left open. */
  hold(port: number, dog: Watchdog): Promise<Held>;
  /** Connections opened at once (default BATCH). */
  batch?: number;
  /** Time the first held connections as the start samples instead of separate ones. */
  timeHolds?: boolean;
  /** How long opening may take, in ms (default OPEN_BUDGET_MS). */
  budgetMs?: number;
  /** Wait until what the server sends the held connections has stopped (2_3's join notices). */
  drained?: (held: Held[]) => Promise<string | undefined>;
  /** After the drain, wait (at most IDLE_MS) for the server to give memory back. */
  idle?: boolean;
}

/** A held connection; `received` counts bytes read since it was served. */
export interface Held {
  conn: Deno.TcpConn;
  received?: () => number;
}

/** The server a held-open run weighs. */
export interface Weighed {
  pid: number;
  port: number;
  /** Has it exited? */
  exited: () => boolean;
  /** Said when it exits while connections are opened (the book's select() limit). */
  exitNote?: string;
  /** A process per connection: wait for one handler per held connection to settle. */
  processPerConnection?: boolean;
}

/**
 * After a burst: calls `sample` every `stepMs`, for at most `ms`, until the
 * growth over `before` has fallen to GIVEN_BACK of what it was at `peak` and
 * holds there (two samples within 1 %). Returns the last sample and the
 * seconds it took, or `seconds` undefined when nothing was given back (or
 * the process is gone: `sample` returned undefined).
 */
export async function givenBack(
  sample: () => Promise<TreeMemory | undefined>,
  before: TreeMemory,
  peak: TreeMemory,
  ms: number,
  stepMs = 1_000,
): Promise<{ memory: TreeMemory; seconds?: number }> {
  const began = performance.now();
  const fallen = (m: TreeMemory) =>
    m.kb - before.kb <= GIVEN_BACK * (peak.kb - before.kb);
  let last = peak;
  while (performance.now() - began < ms) {
    await sleep(stepMs);
    const now = await sample();
    if (!now) break;
    const steady = Math.abs(now.kb - last.kb) <= 0.01 * last.kb;
    last = now;
    if (fallen(now) && steady) {
      return { memory: now, seconds: (performance.now() - began) / 1000 };
    }
  }
  return { memory: last };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Samples the tree until it stops growing (two samples within 1 %), at most `ms`. */
async function settled(
  pid: number,
  ms: number,
  minProcesses = 0,
): Promise<TreeMemory | undefined> {
  const end = performance.now() + ms;
  let last = await treeMemory(pid);
  while (last && performance.now() < end) {
    await sleep(250);
    const now = await treeMemory(pid);
    if (!now) return last;
    const steady = Math.abs(now.kb - last.kb) <= 0.01 * last.kb;
    last = now;
    if (steady && now.processes >= minProcesses) break;
  }
  return last;
}

function closeAll(held: Held[]): void {
  for (const { conn } of held) {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

/** What opening the held connections came to. */
interface Opened {
  held: Held[];
  /** Start times of the first held connections (a protocol with timeHolds). */
  starts: number[];
  /** Why opening stopped short, if it did. */
  failure?: string;
  /** The last memory snapshot taken while opening, and how many were held then. */
  snapshot?: { memory: TreeMemory; held: number };
}

/** START_SAMPLES fresh connections, each served once and closed: their times in ms. */
async function startSamples(
  protocol: HoldProtocol,
  port: number,
  dog: Watchdog,
  notes: string[],
): Promise<number[]> {
  const starts: number[] = [];
  // A protocol that opens one at a time times its first held connections
  // instead (the book's chat server crashes when a client that left is
  // sent the next one's join notice).
  if (protocol.timeHolds) return starts;
  for (let i = 0; i < START_SAMPLES; i++) {
    const began = performance.now();
    try {
      await protocol.sample(port, dog);
      starts.push(performance.now() - began);
    } catch (error) {
      notes.push(`a start sample failed (${errorKind(error)})`);
      break;
    }
  }
  return starts;
}

/** `wanted`, or fewer if this process's open-file limit cannot hold them (a note says so). */
async function heldTarget(wanted: number, notes: string[]): Promise<number> {
  const limit = await openFileLimit();
  if (!limit || limit.soft >= wanted + SPARE_FILES) return wanted;
  const target = Math.max(0, limit.soft - SPARE_FILES);
  notes.push(`open-file limit ${limit.soft}: held at most ${target}`);
  return target;
}

/**
 * Opens up to `target` connections in batches until the time budget runs
 * out or one fails, with a memory snapshot every SNAPSHOT_EVERY: a server
 * that dies on the way (the book's select() past 1,024 descriptors) is
 * measured at the last one before.
 */
async function openUpTo(
  protocol: HoldProtocol,
  server: Weighed,
  dog: Watchdog,
  target: number,
): Promise<Opened> {
  const opened: Opened = { held: [], starts: [] };
  const { held } = opened;
  const budget = protocol.budgetMs ?? OPEN_BUDGET_MS;
  const deadline = performance.now() + budget;
  while (held.length < target && !opened.failure) {
    if (performance.now() > deadline) {
      opened.failure = `not all open within ${budget / 1000} s`;
      break;
    }
    if (held.length > 0 && held.length % SNAPSHOT_EVERY === 0) {
      const memory = await treeMemory(server.pid);
      if (memory) opened.snapshot = { memory, held: held.length };
    }
    const batch = Math.min(protocol.batch ?? BATCH, target - held.length);
    const began = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: batch }, () => protocol.hold(server.port, dog)),
    );
    const first = results[0].status === "fulfilled";
    if (protocol.timeHolds && opened.starts.length < START_SAMPLES && first) {
      opened.starts.push(performance.now() - began);
    }
    for (const result of results) {
      if (result.status === "fulfilled") held.push(result.value);
      else opened.failure ??= failureText(result.reason);
    }
  }
  return opened;
}

function failureText(reason: unknown): string {
  return `${errorKind(reason)}: ${(reason as Error).message}`;
}

/** The note for opening that stopped short: the server exited, or why it stopped. */
async function shortNote(
  opened: Opened,
  server: Weighed,
  target: number,
): Promise<string | undefined> {
  if (!opened.failure) return undefined;
  // A server that died takes a moment to be reaped.
  await sleep(500);
  const count = opened.held.length;
  if (server.exited()) {
    const at = (count + 1).toLocaleString("en-US");
    const why = server.exitNote ? `: ${server.exitNote}` : "";
    return `the server exited at connection ${at}${why}`;
  }
  const of = `${count.toLocaleString("en-US")} of ${
    target.toLocaleString("en-US")
  }`;
  return `stopped at ${of} (${opened.failure.slice(0, 80)})`;
}

/**
 * Waits, at most IDLE_MS, for the idle server to give back what a burst
 * grew; the figure right after the burst goes into a note.
 */
async function afterIdle(
  pid: number,
  before: TreeMemory,
  peak: TreeMemory,
  count: number,
  notes: string[],
): Promise<TreeMemory> {
  const idle = await givenBack(() => treeMemory(pid), before, peak, IDLE_MS);
  const peakKb = (Math.max(0, peak.kb - before.kb) / count).toFixed(1);
  const right = `${peakKb} KB right after the joins drained`;
  notes.push(
    idle.seconds === undefined
      ? `${right}, not given back within ${IDLE_MS / 1000} s idle`
      : `${right}, given back after ${Math.round(idle.seconds)} s idle`,
  );
  return idle.memory;
}

/** The server's memory with the held connections open, and how many it counts. */
async function memoryHeld(
  protocol: HoldProtocol,
  server: Weighed,
  opened: Opened,
  before: TreeMemory | undefined,
  notes: string[],
): Promise<{ after?: TreeMemory; count: number }> {
  const count = opened.held.length;
  if (protocol.drained && count > 0) {
    const why = await protocol.drained(opened.held);
    if (why) notes.push(why);
  }
  const handlers = server.processPerConnection ? 1 + count : 0;
  const after = await settled(server.pid, SETTLE_MS, handlers);
  if (protocol.idle && before && after && count > 0) {
    return {
      after: await afterIdle(server.pid, before, after, count, notes),
      count,
    };
  }
  const { snapshot } = opened;
  if (!after && snapshot && server.exited()) {
    const at = snapshot.held.toLocaleString("en-US");
    notes.push(`measured at ${at} held, before it exited`);
    return { after: snapshot.memory, count: snapshot.held };
  }
  return { after, count };
}

/** The row's figures from the memory before and after (notes say what is missing). */
function weighed(
  server: Weighed,
  wanted: number,
  starts: number[],
  memory: { before?: TreeMemory; after?: TreeMemory; count: number },
  notes: string[],
): HeldResult {
  const { before, after, count } = memory;
  if (server.processPerConnection && after) {
    notes.push(`${after.processes - 1} handler processes`);
  }
  if (!before || !after) {
    notes.push(
      server.exited()
        ? "memory not measured (the server exited)"
        : "memory not measured (needs /proc and python3)",
    );
  }
  return {
    wanted,
    held: count,
    kbPerConnection: before && after && count > 0
      ? Math.max(0, after.kb - before.kb) / count
      : undefined,
    measure: after?.measure,
    startMs: median(starts),
    notes,
  };
}

/**
 * The memory scenario for one server: START_SAMPLES timed connections, then
 * `wanted` held (fewer if the open-file limit, the server or the time budget
 * stops it: the notes say which), then its memory per connection.
 */
export async function holdOpen(
  server: Weighed,
  wanted: number,
  protocol: HoldProtocol,
): Promise<HeldResult> {
  const dog = new Watchdog();
  const notes: string[] = [];
  let opened: Opened | undefined;
  try {
    const starts = await startSamples(protocol, server.port, dog, notes);
    const before = await settled(server.pid, 1_000);
    const target = await heldTarget(wanted, notes);
    opened = await openUpTo(protocol, server, dog, target);
    const short = await shortNote(opened, server, target);
    if (short) notes.push(short);
    const memory = await memoryHeld(protocol, server, opened, before, notes);
    const allStarts = [...starts, ...opened.starts];
    return weighed(server, wanted, allStarts, { before, ...memory }, notes);
  } finally {
    if (opened) closeAll(opened.held);
    dog.stop();
  }
}

// --- What the scenarios' protocols share ---

/** Reads until `done` says the bytes so far are a whole reply (at most `max` bytes). */
export async function readUntil(
  conn: Deno.TcpConn,
  done: (data: Uint8Array) => boolean,
  max = 4096,
): Promise<Uint8Array> {
  const buffer = new Uint8Array(max);
  let length = 0;
  while (!done(buffer.subarray(0, length))) {
    if (length === max) throw new Error("reply too long");
    const n = await conn.read(buffer.subarray(length));
    if (n === null) throw new Error("closed by the server");
    length += n;
  }
  return buffer.subarray(0, length);
}

/** Connects and runs `serve` under the watchdog; closes the connection on failure. */
export async function opened(
  port: number,
  dog: Watchdog,
  serve: (conn: Deno.TcpConn) => Promise<void>,
): Promise<Deno.TcpConn> {
  const conn = await connect(port, dog);
  dog.watch(conn, () => conn.close());
  try {
    await serve(conn);
    return conn;
  } catch (error) {
    try {
      conn.close();
    } catch {
      // closed by the watchdog
    }
    throw error;
  } finally {
    dog.done(conn);
  }
}

/** A protocol's sample: a connection opened with `serve`, then closed. */
export async function openedAndClosed(
  port: number,
  dog: Watchdog,
  serve: (conn: Deno.TcpConn) => Promise<void>,
): Promise<void> {
  (await opened(port, dog, serve)).close();
}
