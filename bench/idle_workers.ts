/**
 * A Deno process for the memory floors (bench/costs.ts): starts N idle
 * Workers, each an empty module that posts one message, prints "ready" and
 * waits 60 s (the benchmark kills it sooner). With N = 0 it is a bare Deno
 * process that waits.
 *
 *     deno eval --quiet "$(cat bench/idle_workers.ts)" N
 *
 * costs.ts runs it with `deno eval`, as the floors were always measured.
 * Its Worker is a data: URL, an empty module, so the process needs no
 * permission to start one. Plain JavaScript, since `deno eval` reads it so.
 */

const EMPTY_MODULE = "data:text/javascript,postMessage(0)";

const workers = Number(Deno.args[0] ?? 0);
for (let i = 0; i < workers; i++) {
  const worker = new Worker(EMPTY_MODULE, { type: "module" });
  await new Promise((resolve) => worker.onmessage = resolve);
}
console.log("ready");
setTimeout(() => {}, 60_000);
