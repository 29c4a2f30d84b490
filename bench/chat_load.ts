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
    let measuring = false;
    let measureEnd = Infinity;
    let deliveries = 0;
    const samples = new Samples();
    const sentAt: number[] = [];
    const left: number[] = [];
    let completed = 0;
    const received = new Array<number>(receivers.length).fill(0);
    const inWindow = new Array<number>(receivers.length).fill(0);
    let sending = Promise.resolve();
    let wake = () => {};

    receivers.forEach((client, r) => {
      client.onFrame = (payload) => {
        if (!contains(payload, MARKER)) return;
        const k = received[r]++;
        if (measuring && performance.now() <= measureEnd) {
          deliveries++;
          inWindow[r]++;
        }
        if (--left[k] === 0) {
          if (measuring && !Number.isNaN(sentAt[k])) {
            samples.add(performance.now() - sentAt[k]);
          }
          completed++;
          wake();
        }
      };
      client.closed.then((why) => {
        if (!finished) errors.add(`receiver ${why}`);
      });
    });

    const phase = (seconds: number, record: boolean) =>
      new Promise<void>((resolve) => {
        const end = performance.now() + seconds * 1000;
        const stallTimer = setTimeout(() => done(), seconds * 1000 + STALL_MS);
        const endTimer = setTimeout(() => wake(), seconds * 1000);
        const done = () => {
          clearTimeout(stallTimer);
          clearTimeout(endTimer);
          wake = () => {};
          resolve();
        };
        wake = () => {
          const now = performance.now();
          if (now >= end) {
            if (completed === sentAt.length) done();
            return;
          }
          while (
            sentAt.length - completed < window && sentAt.length < 50_000_000
          ) {
            sentAt.push(record ? performance.now() : NaN);
            left.push(receivers.length);
            sending = sending.then(() => sender.send(MESSAGE)).catch((e) => {
              errors.add(`send ${errorKind(e)}`);
            });
          }
        };
        wake();
      });

    await phase(phases.warmup, false);
    measuring = true;
    measureEnd = performance.now() + phases.seconds * 1000;
    const cpu = cpuMeter();
    await phase(phases.seconds, true);
    const generatorCpu = cpu();
    measuring = false;
    finished = true;
    const missing = left.reduce((sum, n) => sum + n, 0);
    if (missing > 0) errors.add("undelivered", missing);
    return {
      count: deliveries,
      seconds: phases.seconds,
      p50: samples.quantile(0.5),
      p99: samples.quantile(0.99),
      errors: { ...errors.counts },
      notes: [`${samples.size} messages to ${receivers.length} receivers`],
      perConnection: inWindow,
      generatorCpu,
    };
  } finally {
    finished = true;
    await leaveOneByOne(joined);
    dog.stop();
  }
}
