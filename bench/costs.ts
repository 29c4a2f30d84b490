/**
 * The chapter's lesson in four numbers: what one connection costs to start
 * in 2_1 (a Deno process) and 2_2 (a Worker), beside what the book's Python
 * pays for the same (`fork()` and a thread). Measured in this process, so on
 * the load generator's core when pinned; each is the median of N starts.
 */

export interface Cost {
  what: string;
  /** The recipe whose mechanism this is the floor of. */
  model: "2_1" | "2_2";
  /** "Deno" (ours) or "Python" (the book's). */
  runtime: "Deno" | "Python";
  /** The chart's short label: "a bare Deno process". */
  label: string;
  /** Milliseconds per start, or undefined when it could not be measured. */
  ms?: number;
  /** Memory one more of it holds, in KB (PSS), where measured. */
  kb?: number;
  note: string;
}

import { helper, treeMemory } from "./proc.ts";
import { median } from "./stats.ts";

const N = 20;

async function denoProcess(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < N; i++) {
    const began = performance.now();
    const { code } = await new Deno.Command("deno", {
      args: ["eval", "--quiet", "0"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (code !== 0) throw new Error(`deno eval exited ${code}`);
    times.push(performance.now() - began);
  }
  return median(times) ?? NaN;
}

async function worker(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < N; i++) {
    const began = performance.now();
    const w = new Worker("data:text/javascript,postMessage(0)", {
      type: "module",
    });
    await new Promise((resolve) => w.onmessage = resolve);
    w.terminate();
    times.push(performance.now() - began);
  }
  return median(times) ?? NaN;
}

/** Python's costs, in ms. */
interface PythonStarts {
  fork: number;
  thread: number;
}

/** Python's fork()+exit+wait and Thread start+join, timed by python3 itself (bench/python_floors.py). */
async function python(): Promise<PythonStarts> {
  const { code, stdout } = await new Deno.Command("python3", {
    args: [helper("python_floors.py"), String(N * 10)],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (code !== 0) throw new Error(`python3 exited ${code}`);
  const [fork, thread] = new TextDecoder().decode(stdout).trim().split(" ")
    .map(Number);
  return { fork, thread };
}

/** How many at once the memory floors hold (their mean is one's cost). */
const HELD = 40;

/**
 * Starts a `deno eval` process running bench/idle_workers.ts with `workers`
 * idle Workers; resolves once it says "ready". The file's text goes to
 * `deno eval`, so the floor is the same kind of process it always measured
 * (an eval'd script); the program itself is a file that lint and check see.
 */
async function started(workers: number): Promise<Deno.ChildProcess> {
  const script = await Deno.readTextFile(helper("idle_workers.ts"));
  const child = new Deno.Command("deno", {
    args: ["eval", "--quiet", script, String(workers)],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read();
  reader.releaseLock();
  return child;
}

async function stopAll(children: Deno.ChildProcess[]): Promise<void> {
  for (const child of children) {
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
}

/** The summed memory of `children`, each a process tree of its own. */
async function sumKb(
  children: Deno.ChildProcess[],
): Promise<number | undefined> {
  let kb = 0;
  for (const child of children) {
    const memory = await treeMemory(child.pid);
    if (!memory) return undefined;
    kb += memory.kb;
  }
  return kb;
}

/** The Deno floors' memory, in KB (undefined where it could not be measured). */
interface DenoMemory {
  processKb?: number;
  workerKb?: number;
}

/**
 * A Deno process's memory floor, measured as the scenario measures 2_1: HELD
 * bare Deno processes that started and wait (their PSS, shared pages split
 * between them, / HELD).
 */
async function processMemory(): Promise<number | undefined> {
  const processes: Deno.ChildProcess[] = [];
  try {
    for (let i = 0; i < HELD; i++) processes.push(await started(0));
    await new Promise((r) => setTimeout(r, 300));
    const kb = await sumKb(processes);
    return kb === undefined ? undefined : kb / HELD;
  } finally {
    await stopAll(processes);
  }
}

/**
 * A Worker's memory floor, measured as the scenario measures 2_2: one Deno
 * process's PSS growth when it holds HELD idle Workers (/ HELD).
 */
async function workerMemory(): Promise<number | undefined> {
  const bare = await started(0);
  const busy = await started(HELD);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const [a, b] = [await sumKb([bare]), await sumKb([busy])];
    return a !== undefined && b !== undefined
      ? Math.max(0, b - a) / HELD
      : undefined;
  } finally {
    await stopAll([bare, busy]);
  }
}

async function denoMemory(): Promise<DenoMemory> {
  return { processKb: await processMemory(), workerKb: await workerMemory() };
}

async function attempt<T>(fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch {
    return undefined;
  }
}

export async function measureCosts(): Promise<Cost[]> {
  const { fork, thread } = await attempt(python) ?? {};
  const { processKb, workerKb } = await attempt(denoMemory) ?? {};
  return [
    {
      what: "start a Deno process (2_1's handler)",
      model: "2_1",
      runtime: "Deno",
      label: "a bare Deno process",
      ms: await attempt(denoProcess),
      kb: processKb,
      note:
        `\`deno eval 0\`, start to exit; memory: ${HELD} started, waiting \`deno eval\` processes' PSS / ${HELD}`,
    },
    {
      what: "start a Worker (2_2's handler)",
      model: "2_2",
      runtime: "Deno",
      label: "a bare Worker",
      ms: await attempt(worker),
      kb: workerKb,
      note:
        `an empty module, start to its first message; memory: a process's PSS growth with ${HELD} idle Workers / ${HELD}`,
    },
    {
      what: "fork() in Python (the book's 2_1)",
      model: "2_1",
      runtime: "Python",
      label: "Python's fork()",
      ms: fork,
      note: "os.fork(), child exits, parent waits",
    },
    {
      what: "a thread in Python (the book's 2_2)",
      model: "2_2",
      runtime: "Python",
      label: "a Python thread",
      ms: thread,
      note: "threading.Thread start and join",
    },
  ];
}
