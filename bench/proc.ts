/**
 * A process tree's memory and the open-file limit, read by bench/proc.py
 * (Deno reads /proc only under --allow-all and cannot touch resource
 * limits; see that file). Without python3 or /proc every answer is
 * undefined, and the rows say the memory was not measured.
 */

/** One process tree's memory. */
export interface TreeMemory {
  kb: number;
  /** "PSS" or "RSS": what was summed. */
  measure: string;
  processes: number;
}

/** An open-file limit (RLIMIT_NOFILE). */
export interface FileLimit {
  soft: number;
  hard: number;
}

/** bench/proc.py as a path python3 can open from any folder. */
export function helper(name: string): string {
  return new URL(name, import.meta.url).pathname;
}

/** Runs bench/proc.py with `args`; its JSON, or undefined when python3 or /proc is missing. */
async function proc<T>(...args: string[]): Promise<T | undefined> {
  try {
    const { code, stdout } = await new Deno.Command("python3", {
      args: [helper("proc.py"), ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (code !== 0) return undefined;
    return JSON.parse(new TextDecoder().decode(stdout)) ?? undefined;
  } catch {
    return undefined;
  }
}

/** The memory of `pid`'s process tree, or undefined (no /proc, or it is gone). */
export function treeMemory(pid: number): Promise<TreeMemory | undefined> {
  return proc<TreeMemory>("tree", String(pid));
}

/** This process's open-file limit, or undefined without python3. */
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
