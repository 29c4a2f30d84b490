/**
 * 2_4's scenario: the epoll web server beside a minimal Deno server and
 * Node's http, one GET per connection from 50 connections (wrk where it is
 * installed, else the Deno generator), then 10,000 connections held open,
 * each with half a request head (a served HTTP connection is a closed one).
 */

import { type HoldProtocol, opened, openedAndClosed } from "../hold.ts";
import { httpLoad } from "../load.ts";
import { exchange, HOST, readToClose, writeAll } from "../net.ts";
import {
  lineUp,
  type Load,
  ours,
  PEER_READY,
  type Scenario,
} from "../scenario.ts";
import type { Server, ServerSpec } from "../servers.ts";
import { wrkLoad } from "../wrk.ts";

/** The body of 2_4's page. */
export const BODY = "\nHello from Epoll Server!";
const HELD = 10_000;
const CONNECTIONS = 50;
const encoder = new TextEncoder();

/** What the check learned: does the response lack `Connection: close`? (see wrk.ts) */
interface WebChecked {
  closesWithoutHeader: boolean;
}

const PEERS: ServerSpec[] = [
  {
    label: "Deno minimal (peer)",
    kind: "peer",
    command: [
      "deno",
      "run",
      "--quiet",
      "--allow-net=127.0.0.1",
      "bench/peers/deno_http.ts",
      "--port=0",
    ],
    ready: PEER_READY,
  },
  {
    label: "Node http (peer)",
    kind: "peer",
    command: ["node", "bench/peers/node_http.mjs", "--port=0"],
    ready: PEER_READY,
  },
];

/** The check: a 2xx response with 2_4's body (any body from a --vs server). */
async function checkWeb(server: Server): Promise<WebChecked> {
  const reply = await exchange(
    server.port,
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
  );
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(reply);
  if (!status || !status[1].startsWith("2")) {
    throw new Error(
      `check: expected a 2xx response, got ${
        JSON.stringify(reply.slice(0, 80))
      }`,
    );
  }
  if (server.spec.kind !== "vs" && !reply.endsWith(`\r\n\r\n${BODY}`)) {
    throw new Error(
      `check: expected the body ${JSON.stringify(BODY)}, got ${
        JSON.stringify(reply.slice(-60))
      }`,
    );
  }
  const head = reply.slice(0, reply.indexOf("\r\n\r\n"));
  return { closesWithoutHeader: !/^connection:\s*close\s*$/im.test(head) };
}

/** A whole request for the start samples; half a head for a held one. */
const httpHold: HoldProtocol = {
  sample: (port, dog) =>
    openedAndClosed(port, dog, async (conn) => {
      const request =
        `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`;
      await writeAll(conn, encoder.encode(request));
      await readToClose(conn);
    }),
  async hold(port, dog) {
    const half = encoder.encode(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`);
    return { conn: await opened(port, dog, (conn) => writeAll(conn, half)) };
  },
};

/** 50 connections under wrk (behind `wrkPrefix`), or the Deno generator without it. */
function timed(wrkPrefix: string[] | undefined): Load<WebChecked> {
  return {
    kind: "timed",
    label: `${CONNECTIONS} connections`,
    generator: () => wrkPrefix ? `wrk -t1 -c${CONNECTIONS}` : "Deno generator",
    run(server, checked, phases) {
      if (wrkPrefix) {
        const { closesWithoutHeader } = checked;
        const { port } = server;
        return wrkLoad(
          wrkPrefix,
          port,
          CONNECTIONS,
          phases,
          closesWithoutHeader,
        );
      }
      const body = server.spec.kind === "vs" ? undefined : BODY;
      return httpLoad(server.port, CONNECTIONS, phases, body);
    },
  };
}

/** The 2_4 scenario; wrk runs behind `wrkPrefix` (e.g. ["taskset", "-c", "0"]) if given. */
export function web(wrkPrefix: string[] | undefined): Scenario<WebChecked> {
  return {
    id: "2_4",
    title: "2_4 epoll web server: one request per connection",
    unit: "requests/s",
    async servers(versus) {
      const ourServer = await ours(
        "2_4",
        "2_4_simple_web_server_with_epoll.ts",
        [],
        /Listening on http:\/\/[^/\s]+:(\d+)\//,
      );
      return lineUp("2_4", ourServer, PEERS, versus);
    },
    check: checkWeb,
    loads: [
      timed(wrkPrefix),
      { kind: "held", wanted: HELD, protocol: () => httpHold },
    ],
  };
}
