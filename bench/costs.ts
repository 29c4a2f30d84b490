/**
 * The chapter's lesson in four numbers: what one connection costs to start
 * in 2_1 (a Deno process) and 2_2 (a Worker), beside what the book's Python
 * pays for the same (`fork()` and a thread). Measured in this process, so on
 * the load generator's core when pinned; each is the median of N starts.
 */

export interface Cost {
  what: string;
  /** Milliseconds per start, or undefined when it could not be measured. */
  ms?: number;
  note: string;
}

const N = 20;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

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
  return median(times);
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
  return median(times);
}

/** Python's fork()+exit+wait and Thread start+join, timed by python3 itself. */
async function python(): Promise<[number, number]> {
  const script = `
import os, threading, time
def median(f, n=${N * 10}):
    times = []
    for _ in range(n):
        began = time.perf_counter(); f(); times.append(time.perf_counter() - began)
    return sorted(times)[n // 2] * 1000
def fork():
    pid = os.fork()
    if pid == 0: os._exit(0)
    os.waitpid(pid, 0)
def thread():
    t = threading.Thread(target=lambda: None); t.start(); t.join()
print(median(fork), median(thread))
`;
  const { code, stdout } = await new Deno.Command("python3", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (code !== 0) throw new Error(`python3 exited ${code}`);
  const [fork, thread] = new TextDecoder().decode(stdout).trim().split(" ")
    .map(Number);
  return [fork, thread];
}

async function attempt<T>(fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch {
    return undefined;
  }
}

export async function measureCosts(): Promise<Cost[]> {
  const [fork, thread] = await attempt(python) ?? [];
  return [
    {
      what: "start a Deno process (2_1's handler)",
      ms: await attempt(denoProcess),
      note: "`deno eval 0`, start to exit",
    },
    {
      what: "start a Worker (2_2's handler)",
      ms: await attempt(worker),
      note: "an empty module, start to its first message",
    },
    {
      what: "fork() in Python (the book's 2_1)",
      ms: fork,
      note: "os.fork(), child exits, parent waits",
    },
    {
      what: "a thread in Python (the book's 2_2)",
      ms: thread,
      note: "threading.Thread start and join",
    },
  ];
}
