/**
 * The memory scenario: what one open connection costs a server. N
 * connections are opened and each is served once (a line echoed, a chat
 * name answered), then held open; the server's memory growth divided by N
 * is its memory per connection. 2_4 holds half a request head instead (an
 * HTTP connection served is a connection closed); 2_1 and 2_2 hold their
 * cap of 40 connections with no request yet, so 40 handler processes or
 * Workers wait.
 *
 * "The server's memory" is its whole process tree (2_1's handler processes
 * too): the sum of each process's PSS from /proc/PID/smaps_rollup where it
 * exists (pages shared between processes are split between them, so forty
 * handlers that share a runtime's code are not counted forty times), RSS
 * from /proc/PID/status elsewhere (read by python3: see PROC). Without
 * /proc (or python3) it is not measured.
 *
 * Before that, the first START_SAMPLES connections are made one at a time,
 * each served once and closed: their median time from connect to the first
 * reply is the cost of starting one connection (a process, a Worker, or a
 * little state in one loop).
 */

import type { ChatFormat } from "./chat_client.ts";
import { connect, HOST, readToClose, Watchdog, writeAll } from "./net.ts";
import { errorKind } from "./stats.ts";

const encoder = new TextEncoder();
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
/** 2_3: how long the join notices may take to drain (N²/2 frames in all). */
const DRAIN_MS = 60_000;
/**
 * 2_3: how long an idle server may take to give back the memory the join
 * notices grew. V8 keeps a grown heap while the process is busy and returns
 * it when its memory reducer runs, some seconds after the process went idle
 * (7 to 15 s after 2,000 joins here), so a figure taken right after the
 * drain weighs the burst, not the clients.
 */
const IDLE_MS = 30_000;
/** A fall to this fraction of the growth or less counts as given back. */
const GIVEN_BACK = 0.9;

/** One process tree's memory. */
export interface TreeMemory {
  kb: number;
  /** "PSS" or "RSS": what was summed. */
  measure: string;
  processes: number;
}

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

/** How the memory scenario talks to one kind of server. */
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

/**
 * Reads /proc through python3: Deno asks for every permission (--allow-all)
 * to read /proc, which a benchmark should not need, so one small python3
 * process per sample reads what is asked and prints it as JSON.
 *
 * - `tree PID`: the memory of PID and its descendants (from
 *   /proc/PID/task/TID/children), PSS or RSS as above.
 * - `limit`: the open-file limit (soft, hard) python3 inherited from us.
 * - `raise N`: raises our (its parent's) soft open-file limit to N, at most
 *   the hard limit, which needs no privilege.
 */
const PROC = `
import json, os, resource, sys
def read(path):
    try:
        with open(path) as f: return f.read()
    except OSError: return None
def field(text, name):
    for line in (text or "").splitlines():
        if line.startswith(name + ":"): return int(line.split()[1])
    return None
def tree(pid):
    pids = [pid]
    for p in pids:
        try: tasks = os.listdir("/proc/%d/task" % p)
        except OSError: tasks = []
        for t in tasks:
            for c in (read("/proc/%d/task/%s/children" % (p, t)) or "").split():
                if int(c) not in pids: pids.append(int(c))
    kb, measure = 0, "PSS"
    for p in pids:
        pss = field(read("/proc/%d/smaps_rollup" % p), "Pss")
        if pss is None:
            pss = field(read("/proc/%d/status" % p), "VmRSS") or 0
            measure = "RSS"
        kb += pss
    return {"kb": kb, "measure": measure, "processes": len(pids)}
what = sys.argv[1]
if what == "tree":
    pid = int(sys.argv[2])
    print(json.dumps(tree(pid) if read("/proc/%d/status" % pid) else None))
elif what == "limit":
    print(json.dumps(resource.getrlimit(resource.RLIMIT_NOFILE)))
elif what == "raise":
    soft, hard = resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE)
    target = min(int(sys.argv[2]), hard) if hard != resource.RLIM_INFINITY else int(sys.argv[2])
    if target > soft: resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (target, hard))
    print(json.dumps(resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE)))
`.trim();

/** Runs PROC with `args`; undefined when python3 or /proc is missing. */
export async function proc<T>(...args: string[]): Promise<T | undefined> {
  try {
    const { code, stdout } = await new Deno.Command("python3", {
      args: ["-c", PROC, ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (code !== 0) return undefined;
    return JSON.parse(new TextDecoder().decode(stdout)) ?? undefined;
  } catch {
    return undefined;
  }
}

/** The memory of `pid`'s process tree, or undefined without /proc. */
export function treeMemory(pid: number): Promise<TreeMemory | undefined> {
  return proc<TreeMemory>("tree", String(pid));
}

/** An open-file limit (RLIMIT_NOFILE). */
export interface FileLimit {
  soft: number;
  hard: number;
}

/** This process's open-file limit, or undefined without /proc. */
export async function openFileLimit(): Promise<FileLimit | undefined> {
  const limit = await proc<number[]>("limit");
  if (!limit) return undefined;
  const [soft, hard] = limit.map((n) => n < 0 ? Infinity : n);
  return { soft, hard };
}

/**
 * Raises this process's soft open-file limit to `needed` (at most the hard
 * limit), so it and the servers it starts (they inherit it) can hold the
 * memory scenario's connections. Says what it got.
 */
export async function raiseOpenFiles(needed: number): Promise<string> {
  const before = await openFileLimit();
  if (!before) return "open-file limit unknown (needs python3 and /proc)";
  const { soft } = before;
  if (soft >= needed) return `open-file limit ${soft}`;
  const after = (await proc<[number, number]>("raise", String(needed)))?.[0];
  return after !== undefined && after > soft
    ? `open-file limit raised from ${soft} to ${after}`
    : `open-file limit ${soft} (could not raise it to ${needed})`;
}

function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
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
    await new Promise((r) => setTimeout(r, stepMs));
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

/** Samples the tree until it stops growing (two samples within 1 %), at most `ms`. */
async function settled(
  pid: number,
  ms: number,
  minProcesses = 0,
): Promise<TreeMemory | undefined> {
  const end = performance.now() + ms;
  let last = await treeMemory(pid);
  while (last && performance.now() < end) {
    await new Promise((r) => setTimeout(r, 250));
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

/**
 * The scenario for one server: START_SAMPLES timed connections, then N held
 * (fewer if the open-file limit, the server or the time budget stops it:
 * the notes say which), then its memory per connection.
 */
export async function holdOpen(
  pid: number,
  port: number,
  wanted: number,
  protocol: HoldProtocol,
  options: {
    processPerConnection?: boolean;
    /** Said when the server exits while connections are opened (the book's select() limit). */
    exitNote?: string;
    exited?: () => boolean;
  } = {},
): Promise<HeldResult> {
  const dog = new Watchdog();
  const notes: string[] = [];
  const held: Held[] = [];
  try {
    const starts: number[] = [];
    // A protocol that opens one at a time times its first held connections
    // instead (the book's chat server crashes when a client that left is
    // sent the next one's join notice).
    const timeHolds = protocol.timeHolds ?? false;
    for (let i = 0; i < (timeHolds ? 0 : START_SAMPLES); i++) {
      const began = performance.now();
      try {
        await protocol.sample(port, dog);
        starts.push(performance.now() - began);
      } catch (error) {
        notes.push(`a start sample failed (${errorKind(error)})`);
        break;
      }
    }
    const before = await settled(pid, 1_000);
    const limit = await openFileLimit();
    let target = wanted;
    if (limit && limit.soft < wanted + 200) {
      target = Math.max(0, limit.soft - 200);
      notes.push(`open-file limit ${limit.soft}: held at most ${target}`);
    }
    const budget = protocol.budgetMs ?? OPEN_BUDGET_MS;
    const deadline = performance.now() + budget;
    let failure: string | undefined;
    // A snapshot every SNAPSHOT_EVERY connections: a server that dies on
    // the way (the book's select() past 1,024 descriptors) is measured at
    // the last one before.
    let snapshot: { memory: TreeMemory; held: number } | undefined;
    while (held.length < target && !failure) {
      if (performance.now() > deadline) {
        failure = `not all open within ${budget / 1000} s`;
        break;
      }
      if (held.length > 0 && held.length % SNAPSHOT_EVERY === 0) {
        const now = await treeMemory(pid);
        if (now) snapshot = { memory: now, held: held.length };
      }
      const batch = Math.min(protocol.batch ?? BATCH, target - held.length);
      const began = performance.now();
      const results = await Promise.allSettled(
        Array.from({ length: batch }, () => protocol.hold(port, dog)),
      );
      if (timeHolds && starts.length < START_SAMPLES) {
        if (results[0].status === "fulfilled") {
          starts.push(performance.now() - began);
        }
      }
      for (const result of results) {
        if (result.status === "fulfilled") held.push(result.value);
        else {failure ??= `${errorKind(result.reason)}: ${
            (result.reason as Error).message
          }`;}
      }
    }
    // A server that died takes a moment to be reaped.
    if (failure) await new Promise((r) => setTimeout(r, 500));
    if (failure && options.exited?.()) {
      notes.push(
        `the server exited at connection ${
          (held.length + 1).toLocaleString("en-US")
        }${options.exitNote ? `: ${options.exitNote}` : ""}`,
      );
    } else if (failure) {
      notes.push(
        `stopped at ${held.length.toLocaleString("en-US")} of ${
          target.toLocaleString("en-US")
        } (${failure.slice(0, 80)})`,
      );
    }
    if (protocol.drained && held.length > 0) {
      const why = await protocol.drained(held);
      if (why) notes.push(why);
    }
    let after = await settled(
      pid,
      SETTLE_MS,
      options.processPerConnection ? 1 + held.length : 0,
    );
    let count = held.length;
    if (protocol.idle && before && after && count > 0) {
      const peak = after;
      const idle = await givenBack(
        () => treeMemory(pid),
        before,
        peak,
        IDLE_MS,
      );
      after = idle.memory;
      const peakKb = (Math.max(0, peak.kb - before.kb) / count).toFixed(1);
      notes.push(
        idle.seconds === undefined
          ? `${peakKb} KB right after the joins drained, not given back within ${
            IDLE_MS / 1000
          } s idle`
          : `${peakKb} KB right after the joins drained, given back after ${
            Math.round(idle.seconds)
          } s idle`,
      );
    }
    if (!after && snapshot && options.exited?.()) {
      after = snapshot.memory;
      count = snapshot.held;
      notes.push(
        `measured at ${count.toLocaleString("en-US")} held, before it exited`,
      );
    }
    if (options.processPerConnection && after) {
      notes.push(`${after.processes - 1} handler processes`);
    }
    const measured = before && after && count > 0;
    if (!before || !after) {
      notes.push(
        options.exited?.()
          ? "memory not measured (the server exited)"
          : "memory not measured (needs /proc and python3)",
      );
    }
    return {
      wanted,
      held: count,
      kbPerConnection: measured && before && after
        ? Math.max(0, after.kb - before.kb) / count
        : undefined,
      measure: after?.measure,
      startMs: median(starts),
      notes,
    };
  } finally {
    closeAll(held);
    dog.stop();
  }
}

// ---- The protocols of the five recipes, for holdOpen ----------------------

async function readUntil(
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

/** Connect and run `serve` under the watchdog; closes the connection on failure. */
async function opened(
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

const LINE = encoder.encode("x".repeat(63) + "\n");
const endsLine = (data: Uint8Array) =>
  data.length > 0 && data[data.length - 1] === 0x0a;

/** 2_5: a line echoed, then the connection held. */
export const echoHold: HoldProtocol = {
  async sample(port, dog) {
    const conn = await opened(port, dog, async (conn) => {
      await writeAll(conn, LINE);
      await readUntil(conn, endsLine);
    });
    conn.close();
  },
  async hold(port, dog) {
    return {
      conn: await opened(port, dog, async (conn) => {
        await writeAll(conn, LINE);
        await readUntil(conn, endsLine);
      }),
    };
  },
};

/** 2_4: a whole request for the start samples; half a head for a held one. */
export const httpHold: HoldProtocol = {
  async sample(port, dog) {
    const conn = await opened(port, dog, async (conn) => {
      await writeAll(
        conn,
        encoder.encode(
          `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
        ),
      );
      await readToClose(conn);
    });
    conn.close();
  },
  async hold(port, dog) {
    return {
      conn: await opened(
        port,
        dog,
        (conn) =>
          writeAll(conn, encoder.encode(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`)),
      ),
    };
  },
};

/** 2_1 / 2_2: a whole exchange for the start samples; a held one sends nothing yet. */
export const oneShotHold: HoldProtocol = {
  async sample(port, dog) {
    const conn = await opened(port, dog, async (conn) => {
      await writeAll(conn, encoder.encode("Hello echo server!"));
      await readToClose(conn);
    });
    conn.close();
  },
  async hold(port, dog) {
    return { conn: await opened(port, dog, async () => {}) };
  },
  // One at a time: the book's TCPServer listens with a backlog of 5, and a
  // connection past it looks connected to the client but waits, unaccepted,
  // until the handshake is retried a second or more later.
  batch: 1,
};

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

const CLIENT_REPLY = encoder.encode("CLIENT: ");

/**
 * 2_3: a named client (the book's handshake, `NAME: x` answered by
 * `CLIENT: ip`), held open and reading: each later join is announced to it.
 * The bytes are only counted, not parsed.
 */
export function chatHold(format: ChatFormat, names: string[]): HoldProtocol {
  let next = 0;
  const handshake = async (conn: Deno.TcpConn) => {
    await writeAll(conn, format.frame(`NAME: ${names[next++ % names.length]}`));
    await readUntil(conn, (data) => contains(data, CLIENT_REPLY), 64 * 1024);
  };
  return {
    // One at a time, as the book's server needs: it reads a new client's
    // name with a blocking recv() inside its accept branch.
    batch: 1,
    timeHolds: true,
    budgetMs: 60_000,
    idle: true,
    async sample(port, dog) {
      const conn = await opened(port, dog, handshake);
      conn.close();
    },
    async hold(port, dog) {
      const conn = await opened(port, dog, handshake);
      let received = 0;
      const scratch = new Uint8Array(4096);
      (async () => {
        try {
          while (true) {
            const n = await conn.read(scratch);
            if (n === null) break;
            received += n;
          }
        } catch {
          // closed at the end of the scenario
        }
      })();
      return { conn, received: () => received };
    },
    async drained(held) {
      const total = () =>
        held.reduce((sum, h) => sum + (h.received?.() ?? 0), 0);
      const end = performance.now() + DRAIN_MS;
      let last = -1;
      while (performance.now() < end) {
        await new Promise((r) => setTimeout(r, 500));
        const now = total();
        if (now === last) return undefined;
        last = now;
      }
      return `join notices still arriving after ${DRAIN_MS / 1000} s`;
    },
  };
}
