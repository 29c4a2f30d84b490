/**
 * The 2_3 scenario: N chat clients join one after the other (the book's
 * handshake: send `NAME: <name>`, receive `CLIENT: <ip>`), then one of them
 * sends with at most W messages in flight; the server fans each message out
 * to the N-1 others. A message is complete when the last of them has it.
 * Reports deliveries/s and the latency from send to the last delivery.
 * Frames, ours or the book's pickle ones, are cut by ChatClient
 * (chat_client.ts); a delivery is a frame whose bytes hold "BENCHMSG".
 */

import type { Phases } from "./load.ts";
import {
  ChatClient,
  type ChatFormat,
  contains,
  MESSAGE,
} from "./chat_client.ts";
import { connect, READY_MS, Watchdog } from "./net.ts";
import {
  cpuMeter,
  ErrorCounter,
  errorKind,
  type LoadResult,
  Samples,
} from "./stats.ts";

const encoder = new TextEncoder();
const MARKER = encoder.encode("BENCHMSG");
const CLIENT_REPLY = encoder.encode("CLIENT: ");
const HUNG_UP = encoder.encode("hung up");
const STALL_MS = 5_000;

/** Connects and does the book's handshake (NAME: -> CLIENT:). */
async function join(
  port: number,
  name: string,
  format: ChatFormat,
  dog: Watchdog,
  retryRefusedMs = 0,
): Promise<ChatClient> {
  const conn = await connect(port, dog, retryRefusedMs);
  const client = new ChatClient(conn, format);
  const welcomed = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no CLIENT: reply for ${name}`)),
      STALL_MS,
    );
    client.onFrame = (payload) => {
      if (!contains(payload, CLIENT_REPLY)) return;
      clearTimeout(timer);
      client.onFrame = () => {};
      resolve();
    };
    client.closed.then((why) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${why} during the handshake`));
    });
  });
  try {
    await client.send(`NAME: ${name}`);
    await welcomed;
    return client;
  } catch (error) {
    client.close();
    throw error;
  }
}

/**
 * Clients leave one at a time, each after the others have heard the last
 * one's "hung up" notice: the book's server crashes when clients leave at
 * once (a notice to a client already gone raises, and its handler removes
 * that socket a second time).
 */
async function leaveOneByOne(clients: ChatClient[]): Promise<void> {
  for (let i = 0; i < clients.length; i++) {
    const others = clients.slice(i + 1);
    const heard = others.map((client) =>
      new Promise<void>((resolve) => {
        client.onFrame = (payload) => {
          if (contains(payload, HUNG_UP)) resolve();
        };
        client.closed.then(() => resolve());
      })
    );
    clients[i].close();
    await clients[i].closed;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const allHeard = await Promise.race([
      Promise.all(heard).then(() => true),
      new Promise<boolean>((resolve) =>
        timer = setTimeout(() => resolve(false), STALL_MS)
      ),
    ]);
    clearTimeout(timer);
    if (!allHeard) {
      // This server sends no notices: the rest leave together.
      for (const client of others) client.close();
      await Promise.all(others.map((client) => client.closed));
      return;
    }
  }
}

/** Correctness: three clients join; one message reaches the two others. */
export async function checkChat(
  port: number,
  format: ChatFormat,
): Promise<void> {
  const dog = new Watchdog();
  const clients: ChatClient[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      clients.push(await join(port, `check${i}`, format, dog, READY_MS));
    }
    const got = clients.slice(1).map((client) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error("a message was not delivered")),
          STALL_MS,
        );
        client.onFrame = (payload) => {
          if (contains(payload, MARKER)) {
            clearTimeout(timer);
            resolve();
          }
        };
      })
    );
    await clients[0].send(MESSAGE);
    await Promise.all(got);
  } finally {
    await leaveOneByOne(clients);
    dog.stop();
  }
}

/**
 * One run's messages: when each was sent, how many receivers still lack it,
 * and what the timed window counted (deliveries, per receiver, latencies).
 */
class Fanout {
  measuring = false;
  measureEnd = Infinity;
  deliveries = 0;
  completed = 0;
  readonly samples = new Samples();
  readonly sentAt: number[] = [];
  readonly left: number[] = [];
  readonly received: number[];
  readonly inWindow: number[];
  /** Called when a message completes (or a phase's end passes): send more. */
  wake = () => {};
  /** The sender's writes, one after another across both phases (never two at once). */
  sending = Promise.resolve();

  constructor(readonly receivers: number) {
    this.received = new Array<number>(receivers).fill(0);
    this.inWindow = new Array<number>(receivers).fill(0);
  }

  /** Receiver `r` got its next message; the last receiver completes it. */
  delivered(r: number): void {
    const k = this.received[r]++;
    if (this.measuring && performance.now() <= this.measureEnd) {
      this.deliveries++;
      this.inWindow[r]++;
    }
    if (--this.left[k] === 0) {
      if (this.measuring && !Number.isNaN(this.sentAt[k])) {
        this.samples.add(performance.now() - this.sentAt[k]);
      }
      this.completed++;
      this.wake();
    }
  }

  /** Deliveries still owed when the run ended. */
  get missing(): number {
    return this.left.reduce((sum, n) => sum + n, 0);
  }
}

/** Each receiver counts the message frames it gets; one that closes early is an error. */
function listen(
  receivers: ChatClient[],
  fanout: Fanout,
  errors: ErrorCounter,
  finished: () => boolean,
): void {
  receivers.forEach((client, r) => {
    client.onFrame = (payload) => {
      if (contains(payload, MARKER)) fanout.delivered(r);
    };
    client.closed.then((why) => {
      if (!finished()) errors.add(`receiver ${why}`);
    });
  });
}

/**
 * One phase of `seconds`: the sender keeps `window` messages in flight
 * until the phase ends and the last one sent has completed (or stalls for
 * STALL_MS). `record` stamps the send times the latencies are taken from.
 */
function phase(
  fanout: Fanout,
  sender: ChatClient,
  errors: ErrorCounter,
  window: number,
  seconds: number,
  record: boolean,
): Promise<void> {
  return new Promise<void>((resolve) => {
    const end = performance.now() + seconds * 1000;
    const stallTimer = setTimeout(() => done(), seconds * 1000 + STALL_MS);
    const endTimer = setTimeout(() => fanout.wake(), seconds * 1000);
    const done = () => {
      clearTimeout(stallTimer);
      clearTimeout(endTimer);
      fanout.wake = () => {};
      resolve();
    };
    const { sentAt, left } = fanout;
    fanout.wake = () => {
      if (performance.now() >= end) {
        if (fanout.completed === sentAt.length) done();
        return;
      }
      while (
        sentAt.length - fanout.completed < window && sentAt.length < 50_000_000
      ) {
        sentAt.push(record ? performance.now() : NaN);
        left.push(fanout.receivers);
        fanout.sending = fanout.sending.then(() => sender.send(MESSAGE))
          .catch((e) => {
            errors.add(`send ${errorKind(e)}`);
          });
      }
    };
    fanout.wake();
  });
}

/** The timed run: `clients` join, client 0 sends with at most `window` in flight. */
export async function chatLoad(
  port: number,
  format: ChatFormat,
  clients: number,
  window: number,
  phases: Phases,
): Promise<LoadResult> {
  const dog = new Watchdog();
  const joined: ChatClient[] = [];
  let finished = false;
  try {
    for (let i = 0; i < clients; i++) {
      joined.push(await join(port, `bench${i}`, format, dog));
    }
    const [sender, ...receivers] = joined;
    const errors = new ErrorCounter();
    const fanout = new Fanout(receivers.length);
    listen(receivers, fanout, errors, () => finished);
    await phase(fanout, sender, errors, window, phases.warmup, false);
    fanout.measuring = true;
    fanout.measureEnd = performance.now() + phases.seconds * 1000;
    const cpu = cpuMeter();
    await phase(fanout, sender, errors, window, phases.seconds, true);
    const generatorCpu = cpu();
    fanout.measuring = false;
    finished = true;
    if (fanout.missing > 0) errors.add("undelivered", fanout.missing);
    const { samples } = fanout;
    return {
      count: fanout.deliveries,
      seconds: phases.seconds,
      p50: samples.quantile(0.5),
      p99: samples.quantile(0.99),
      errors: { ...errors.counts },
      notes: [`${samples.size} messages to ${receivers.length} receivers`],
      perConnection: fanout.inWindow,
      generatorCpu,
    };
  } finally {
    finished = true;
    await leaveOneByOne(joined);
    dog.stop();
  }
}
