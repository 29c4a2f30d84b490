/**
 * The shape 2_1 and 2_2 share: a server that answers one message per
 * connection and closes it ("Hello echo server!" -> "<handler>: Hello echo
 * server!"), timed as connections per second at concurrency 1 and 10, and
 * weighed with its cap of 40 connections held open, each waiting for its
 * request (so 40 handler processes or Workers wait). The two scenario modules
 * give it their recipe; this module imports nothing of a scenario.
 */

import { type HoldProtocol, opened, openedAndClosed } from "./hold.ts";
import { oneShotLoad } from "./load.ts";
import { BadReply, exchange, readToClose, writeAll } from "./net.ts";
import {
  lineUp,
  type Load,
  ours,
  type Scenario,
  type Versus,
} from "./scenario.ts";
import type { Server } from "./servers.ts";

const encoder = new TextEncoder();
const LISTENING = /Listening on \S+:(\d+)/;
/** 2_1 and 2_2 allow this many connections at once: all are held. */
const HELD_CAP = 40;

/** A whole exchange for the start samples; a held one sends nothing yet. */
const oneShotHold: HoldProtocol = {
  sample: (port, dog) =>
    openedAndClosed(port, dog, async (conn) => {
      await writeAll(conn, encoder.encode("Hello echo server!"));
      await readToClose(conn);
    }),
  async hold(port, dog) {
    return { conn: await opened(port, dog, async () => {}) };
  },
  // One at a time: the book's TCPServer listens with a backlog of 5, and a
  // connection past it looks connected to the client but waits, unaccepted,
  // until the handshake is retried a second or more later.
  batch: 1,
};

/** The check: one exchange, answered "<handler>: Hello echo server!". */
async function checkOneShot(server: Server): Promise<void> {
  const reply = await exchange(server.port, "Hello echo server!");
  // The book's 2_2 answers with Python's repr of the bytes it got
  // ("Thread-1: b'Hello echo server!'"), a bug our 2_2 fixes.
  if (!/^.+: (Hello echo server!|b'Hello echo server!')$/s.test(reply)) {
    throw new BadReply(
      `check: expected "<handler>: Hello echo server!", got ${
        JSON.stringify(reply)
      }`,
    );
  }
}

function oneShotLoads(processPerConnection: boolean): Load<void>[] {
  const timed = [1, 10].map((c): Load<void> => ({
    kind: "timed",
    label: `concurrency ${c}`,
    generator: () => "Deno generator",
    run: (server, _checked, phases) =>
      oneShotLoad(server.port, c, phases, server.spec.kind === "book"),
  }));
  return [...timed, {
    kind: "held",
    wanted: HELD_CAP,
    protocol: () => oneShotHold,
    processPerConnection,
  }];
}

/** The scenario of a one-message-per-connection recipe (2_1 or 2_2). */
export function oneShotScenario(
  id: string,
  file: string,
  title: string,
  processPerConnection: boolean,
): Scenario<void> {
  return {
    id,
    title,
    unit: "connections/s",
    async servers(versus: Versus) {
      const ourServer = await ours(id, file, ["--serve"], LISTENING);
      return lineUp(id, ourServer, [], versus);
    },
    check: checkOneShot,
    loads: oneShotLoads(processPerConnection),
  };
}
