/**
 * 2_5's scenario: the diesel-style echo server beside Node's net echo,
 * 64-byte lines in a closed loop on 1, 50 and 500 long-lived connections,
 * then 10,000 connections held open, each with one line echoed.
 */

import {
  type HoldProtocol,
  opened,
  openedAndClosed,
  readUntil,
} from "../hold.ts";
import { echoLoad } from "../load.ts";
import { exchange, writeAll } from "../net.ts";
import {
  lineUp,
  type Load,
  ours,
  PEER_READY,
  type Scenario,
} from "../scenario.ts";
import type { Server } from "../servers.ts";

const HELD = 10_000;
const LISTENING = /Listening on \S+:(\d+)/;
const LINE = new TextEncoder().encode("x".repeat(63) + "\n");

const endsLine = (data: Uint8Array) =>
  data.length > 0 && data[data.length - 1] === 0x0a;

async function echoOnce(conn: Deno.TcpConn): Promise<void> {
  await writeAll(conn, LINE);
  await readUntil(conn, endsLine);
}

/** A line echoed, then the connection closed (a sample) or held. */
const echoHold: HoldProtocol = {
  sample: (port, dog) => openedAndClosed(port, dog, echoOnce),
  async hold(port, dog) {
    return { conn: await opened(port, dog, echoOnce) };
  },
};

/** The check: two lines, each answered "You said: <line>" with its own line end. */
async function checkEcho(server: Server): Promise<void> {
  const reply = await exchange(
    server.port,
    "hello bench\r\nsecond line\n",
    true,
  );
  const expected = "You said: hello bench\r\nYou said: second line\n";
  const ok = server.spec.kind === "vs"
    ? /hello bench\r\n[^]*second line\n$/.test(reply)
    : reply === expected;
  if (!ok) {
    throw new Error(
      `check: expected ${JSON.stringify(expected)}, got ${
        JSON.stringify(reply)
      }`,
    );
  }
}

const timed = [1, 50, 500].map((n): Load<void> => ({
  kind: "timed",
  label: `${n} connection${n === 1 ? "" : "s"}`,
  generator: () => "Deno generator",
  run: (server, _checked, phases) => echoLoad(server.port, n, phases),
}));

export const echo: Scenario<void> = {
  id: "2_5",
  title: "2_5 diesel echo: 64-byte lines, closed loop",
  unit: "round trips/s",
  async servers(versus) {
    const ourEcho = await ours(
      "2_5",
      "2_5_echo_server_with_diesel.ts",
      [],
      LISTENING,
    );
    return lineUp("2_5", ourEcho, [{
      label: "Node net (peer)",
      kind: "peer",
      command: ["node", "bench/peers/node_net_echo.mjs", "--port=0"],
      ready: PEER_READY,
    }], versus);
  },
  check: checkEcho,
  loads: [...timed, { kind: "held", wanted: HELD, protocol: () => echoHold }],
};
