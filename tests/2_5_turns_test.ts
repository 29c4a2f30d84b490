/**
 * In-process unit tests of 2_5's fair turns (`Turns`): who may issue a read
 * when more connections are ready than Deno completes in one loop turn. The
 * connections are stand-ins with the two fields `Turns` reads; no socket.
 */
import { assertEquals } from "@std/assert";
import { type Reader, TURNS, Turns } from "../2_5_echo_server_with_diesel.ts";

/** A connection as `Turns` sees it: a read pending or not, and its progress. */
function reader(reading = false): Reader {
  return { reading, progress: 0 };
}

/** `turns.take()` for `count` readers, each of which must get its turn at once. */
function takeAtOnce(turns: Turns, count: number, reading = false): Reader[] {
  const holders = Array.from({ length: count }, () => reader(reading));
  for (const holder of holders) {
    assertEquals(turns.take(holder), undefined, "a free turn is taken at once");
  }
  return holders;
}

/** `turns.take()` for a reader that must wait: the promise of its turn. */
function takeWaiting(turns: Turns, waiter = reader()): Promise<void> {
  const turn = turns.take(waiter);
  if (turn === undefined) throw new Error("all turns are held: a read waits");
  return turn;
}

/** Fails if `promise` has not settled within `ms` (a hang would stop the suite). */
async function within<T>(promise: Promise<T>, ms: number, what: string) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: not within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Makes `holders` progress (a read or a write completing) every millisecond
 * until the returned function is called, without any read counted by
 * `turns`: the sweeps never find them stalled.
 */
function keepProgressing(holders: Reader[]): () => void {
  const timer = setInterval(() => {
    for (const holder of holders) holder.progress++;
  }, 1);
  return () => clearInterval(timer);
}

/** TURNS take a turn at once; the next ones wait, and get turns given back first come, first served. */
Deno.test("2_5 Turns: TURNS at once, then first come first served", async () => {
  const turns = new Turns();
  const holders = takeAtOnce(turns, TURNS);
  const stop = keepProgressing(holders);
  try {
    const order: string[] = [];
    const [one, two] = [reader(), reader()];
    const first = takeWaiting(turns, one);
    const second = takeWaiting(turns, two);
    first.then(() => order.push("first"));
    second.then(() => order.push("second"));
    turns.giveBack(holders[0]);
    await within(first, 5_000, "the first waiter's turn");
    assertEquals(order, ["first"]);
    turns.giveBack(holders[1]);
    await within(second, 5_000, "the second waiter's turn");
    assertEquals(order, ["first", "second"]);
    // Everyone gives back: TURNS fresh readers take turns at once again.
    for (const holder of [...holders, one, two]) turns.giveBack(holder);
    takeAtOnce(turns, TURNS);
  } finally {
    stop();
  }
});

/** Half the holders wait on a read, half on a write, all progressing as far as the sweeps can tell, and no read completes: only the quiet rule can act, and it frees the readers' turns, not the writers'. */
Deno.test("2_5 Turns: a quiet loop frees the turns of idle readers only", async () => {
  const turns = new Turns();
  const readers = takeAtOnce(turns, TURNS / 2, true);
  const writers = takeAtOnce(turns, TURNS / 2, false);
  const stop = keepProgressing([...readers, ...writers]);
  try {
    await within(takeWaiting(turns), 5_000, "a turn freed by the quiet rule");
    // The writers and the one admitted hold turns; the rest are free.
    takeAtOnce(turns, TURNS / 2 - 1);
    const last = takeWaiting(turns);
    turns.open(); // ends the wait, and the timers with it
    await last;
  } finally {
    stop();
  }
});

/** One holder makes no progress (a read with nothing to read, or a write to a client that does not read) while the others do: the sweeps free its turn, and only its turn. */
Deno.test("2_5 Turns: the sweeps free a stalled turn, not the busy ones", async () => {
  const turns = new Turns();
  const busy = takeAtOnce(turns, TURNS - 1);
  const stalled = reader(); // writing, say, to a client that does not read
  assertEquals(turns.take(stalled), undefined);
  const stop = keepProgressing(busy);
  // Reads completing elsewhere, so that the loop is never quiet.
  const others = setInterval(() => turns.countRead(), 1);
  try {
    await within(takeWaiting(turns), 5_000, "the stalled holder's turn");
    // The busy ones kept theirs: the next reader still has to wait.
    const next = takeWaiting(turns);
    turns.giveBack(busy[0]);
    await within(next, 5_000, "a turn given back");
  } finally {
    stop();
    clearInterval(others);
  }
});

/** Shutdown: every waiting read goes at once, with no timer involved (to fail on its closed connection), and so does every later one. */
Deno.test("2_5 Turns: open() lets every read go", async () => {
  const turns = new Turns();
  takeAtOnce(turns, TURNS);
  let admitted = 0;
  for (const waiting of [takeWaiting(turns), takeWaiting(turns)]) {
    waiting.then(() => admitted++);
  }
  turns.open();
  // Promise callbacks run as microtasks, before any timer could fire.
  await Promise.resolve();
  await Promise.resolve();
  assertEquals(admitted, 2);
  assertEquals(turns.take(reader()), undefined);
});
