/**
 * In-process unit tests of 2_5's fair turns (`Turns`): who may issue a read
 * when more connections are ready than Deno completes in one loop turn. The
 * connections are stand-ins with the two fields `Turns` reads; no socket.
 */
import { assertEquals } from "@std/assert";
import { type Reader, TURNS, Turns } from "../2_5_echo_server_with_diesel.ts";

/** A connection as `Turns` sees it: a read pending or not, and reads done. */
function reader(reading = false): Reader {
  return { reading, readsDone: 0 };
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

/** TURNS take a turn at once; the next ones wait, and get turns given back first come, first served. */
Deno.test("2_5 Turns: TURNS at once, then first come first served", async () => {
  const turns = new Turns();
  const holders = takeAtOnce(turns, TURNS);
  const order: string[] = [];
  const [one, two] = [reader(), reader()];
  const first = takeWaiting(turns, one);
  const second = takeWaiting(turns, two);
  first.then(() => order.push("first"));
  second.then(() => order.push("second"));
  turns.giveBack(holders[0]);
  await first;
  assertEquals(order, ["first"]);
  turns.giveBack(holders[1]);
  await second;
  assertEquals(order, ["first", "second"]);
  // A reader without a turn gives nothing back: nobody else waits now, and
  // the next one takes the turn its predecessor freed at once.
  turns.giveBack(reader());
  for (const holder of [...holders, one, two]) turns.giveBack(holder);
  takeAtOnce(turns, TURNS);
});

/** Every holder waits on a read and none completes: the loop is quiet, and a new reader gets a turn without anyone giving one back. */
Deno.test("2_5 Turns: idle holders give their turns back when nothing is read", async () => {
  const turns = new Turns();
  takeAtOnce(turns, TURNS, true);
  const waiting = takeWaiting(turns);
  await within(waiting, 5_000, "a turn freed from idle holders");
});

/** One holder waits on a read while other reads keep completing (not quiet): the sweeps find that one idle, and its turn goes to the reader waiting. */
Deno.test("2_5 Turns: the sweeps free the turn of one idle holder among busy ones", async () => {
  const turns = new Turns();
  const busy = takeAtOnce(turns, TURNS - 1); // replying, no read pending
  const idle = reader(true);
  assertEquals(turns.take(idle), undefined);
  const waiting = takeWaiting(turns);
  // Reads completing elsewhere, so that the loop is never quiet.
  const others = setInterval(() => turns.readDone(), 1);
  try {
    await within(waiting, 5_000, "the idle holder's turn");
  } finally {
    clearInterval(others);
  }
  for (const holder of busy) turns.giveBack(holder);
});

/** Shutdown: every waiting read goes at once (to fail on its closed connection), and so does every later one. */
Deno.test("2_5 Turns: open() lets every read go", async () => {
  const turns = new Turns();
  takeAtOnce(turns, TURNS);
  const waiting = [takeWaiting(turns), takeWaiting(turns)];
  turns.open();
  await Promise.all(waiting);
  assertEquals(turns.take(reader()), undefined);
});
