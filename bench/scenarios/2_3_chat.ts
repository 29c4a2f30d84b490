/**
 * 2_3's scenario: the select chat server with 50 clients joined, one of them
 * sending with W = 1 or 8 messages in flight (the server fans each out to the
 * 49 others: deliveries/s), then 2,000 named clients held open, each hearing
 * every later join. The book's server and a `--vs` one (by default) speak the
 * book's pickle frames, ours JSON; both are encoded by recipe 2_3 itself.
 */

import {
  type ChatFormat,
  contains,
  JSON_FORMAT,
  pickleFormat,
} from "../chat_client.ts";
import { chatLoad, checkChat } from "../chat_load.ts";
import { type HoldProtocol, opened, readUntil } from "../hold.ts";
import { writeAll } from "../net.ts";
import { lineUp, type Load, ours, type Scenario } from "../scenario.ts";
import type { Server } from "../servers.ts";

const CHAT_CLIENTS = 50;
/** Held chat clients: past the 1,024 descriptors the book's select() can watch. */
const HELD_CHAT = 2_000;
/** How long the join notices may take to drain (N²/2 frames in all). */
const DRAIN_MS = 60_000;
const CLIENT_REPLY = new TextEncoder().encode("CLIENT: ");

/** What the check learned: the frames this server speaks. */
interface ChatChecked {
  format: ChatFormat;
}

/** The names of the memory scenario's chat clients. */
function holdNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `hold${i}`);
}

/** Waits until the held clients' join notices stop arriving (at most DRAIN_MS). */
async function drained(
  received: (() => number)[],
): Promise<string | undefined> {
  const total = () => received.reduce((sum, bytes) => sum + bytes(), 0);
  const end = performance.now() + DRAIN_MS;
  let last = -1;
  while (performance.now() < end) {
    await new Promise((r) => setTimeout(r, 500));
    const now = total();
    if (now === last) return undefined;
    last = now;
  }
  return `join notices still arriving after ${DRAIN_MS / 1000} s`;
}

/** Counts what a held client reads until it is closed; the bytes are not parsed. */
function counted(conn: Deno.TcpConn): () => number {
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
  return () => received;
}

/**
 * A named client (the book's handshake, `NAME: x` answered by `CLIENT: ip`),
 * held open and reading: each later join is announced to it.
 */
function chatHold(format: ChatFormat, names: string[]): HoldProtocol {
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
      (await opened(port, dog, handshake)).close();
    },
    async hold(port, dog) {
      const conn = await opened(port, dog, handshake);
      return { conn, received: counted(conn) };
    },
    drained: (held) => drained(held.map((h) => h.received ?? (() => 0))),
  };
}

/** The chat scenario; `vsFrame` is the frame a `--vs` chat server speaks. */
export function chat(vsFrame: "pickle" | "json"): Scenario<ChatChecked> {
  const timed = [1, 8].map((w): Load<ChatChecked> => ({
    kind: "timed",
    label: `W = ${w}`,
    generator: () => "Deno generator",
    run: (server, { format }, phases) =>
      chatLoad(server.port, format, CHAT_CLIENTS, w, phases),
  }));
  return {
    id: "2_3",
    title:
      `2_3 select chat: ${CHAT_CLIENTS} clients, one sender, W messages in flight`,
    unit: "deliveries/s",
    async servers(versus) {
      const ourChat = await ours(
        "2_3",
        "2_3_chat_server_with_select.ts",
        ["--name=server"],
        /Server listening to port: (\d+)/,
      );
      return lineUp("2_3", ourChat, [], versus);
    },
    async check(server: Server) {
      const { kind } = server.spec;
      const pickle = kind === "book" || (kind === "vs" && vsFrame === "pickle");
      const format = pickle ? pickleFormat() : JSON_FORMAT;
      try {
        await checkChat(server.port, format);
      } catch (error) {
        const { message } = error as Error;
        throw new Error(`check (${format.name} frames): ${message}`);
      }
      return { format };
    },
    loads: [...timed, {
      kind: "held",
      wanted: HELD_CHAT,
      protocol: (_server, { format }) => chatHold(format, holdNames(HELD_CHAT)),
      exitNote: (server) =>
        server.spec.kind === "book"
          ? "the book's select() cannot watch descriptors past 1,024 (FD_SETSIZE)"
          : undefined,
    }],
  };
}
