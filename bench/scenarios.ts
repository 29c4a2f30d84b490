/**
 * The scenarios: which servers each one runs (our recipe, the peers in
 * bench/peers/, a reader's `--vs` command), how it checks that a server
 * answers correctly before timing it, and the loads it times.
 */

import {
  type ChatFormat,
  chatTexts,
  JSON_FORMAT,
  pickleFormat,
} from "./chat_client.ts";
import { chatLoad, checkChat } from "./chat_load.ts";
import { echoLoad, httpLoad, oneShotLoad, type Phases } from "./load.ts";
import { BadReply, exchange } from "./net.ts";
import { recipeCommand, type Server, type ServerSpec } from "./servers.ts";
import { bookSpec } from "./book.ts";
import {
  chatHold,
  echoHold,
  holdOpen,
  type HoldProtocol,
  httpHold,
  oneShotHold,
} from "./memory.ts";
import type { LoadResult } from "./stats.ts";
import { wrkLoad } from "./wrk.ts";

export const BODY = "\nHello from Epoll Server!";
const CHAT_CLIENTS = 50;

/** What every scenario's loads take from the command line. */
export interface Context {
  /** `--held`: at most this many connections in the memory scenario. */
  heldMax?: number;
}

/** The options only one scenario uses, given when the scenarios are made. */
export interface ScenarioOptions {
  /** 2_4: run wrk behind this prefix (e.g. ["taskset", "-c", "1"]); without it, the Deno generator. */
  wrkPrefix?: string[];
  /** 2_3: the frame a `--vs` chat server speaks. */
  vsFrame: "pickle" | "json";
}

/** What a check learned about a server, for the loads. */
export interface Checked {
  /** 2_4: the response carries no `Connection: close` header. */
  closesWithoutHeader?: boolean;
  chatFormat?: ChatFormat;
  /** 2_3's frames for the memory scenario's names. */
  holdFormat?: ChatFormat;
}

export interface Load {
  /** "50 connections", "W = 8", "10,000 held open", ... */
  label: string;
  /** The row's unit when it is not the scenario's ("KB per connection"). */
  unit?: string;
  /** The memory scenario: connections to hold (at most --held). */
  held?: number;
  /** Who makes the load ("Deno generator", "wrk -t1 -c50", ...). */
  generator(): string;
  run(
    server: Server,
    ctx: Context,
    checked: Checked,
    phases: Phases,
  ): Promise<LoadResult>;
}

/**
 * Who runs beside our recipe: the peers (none asked), a reader's `--vs`
 * command instead of the peers, or the book's scripts from BOOK_DIR beside
 * the peers (`--vs=book`).
 */
export type Versus =
  | { kind: "peers" }
  | { kind: "command"; command: string[] }
  | { kind: "book"; dir: string | undefined };

export interface Scenario {
  id: string;
  title: string;
  unit: string;
  servers(versus: Versus): Promise<ServerSpec[]>;
  check(server: Server): Promise<Checked>;
  loads: Load[];
}

async function ours(
  id: string,
  file: string,
  extra: string[],
  ready: RegExp,
): Promise<ServerSpec> {
  return {
    label: `${id} (ours)`,
    kind: "ours",
    file,
    command: [...await recipeCommand(id, file), ...extra, "--port=0"],
    ready,
  };
}

/** Our server, then the others `versus` asks for beside it. */
async function lineUp(
  id: string,
  ourServer: ServerSpec,
  peers: ServerSpec[],
  versus: Versus,
): Promise<ServerSpec[]> {
  if (versus.kind === "command") return [ourServer, vsSpec(versus.command)];
  if (versus.kind === "book") {
    return [ourServer, await bookSpec(id, versus.dir), ...peers];
  }
  return [ourServer, ...peers];
}

function vsSpec(vs: string[]): ServerSpec {
  const shown = vs.join(" ");
  return {
    label: `vs: ${shown.length > 48 ? shown.slice(0, 45) + "..." : shown}`,
    kind: "vs",
    command: vs,
  };
}

/** The memory scenario's unit: the rate column holds KB, p50 the start time. */
export const MEMORY_UNIT = "KB per connection";

/**
 * The memory scenario as a load: `wanted` connections (at most --held)
 * held open with `protocol` (a function of the server, for 2_3's frames).
 */
function memoryLoad(
  wanted: number,
  protocol: (server: Server, checked: Checked) => HoldProtocol,
  processPerConnection = false,
): Load {
  return {
    label: heldLabel(wanted),
    unit: MEMORY_UNIT,
    held: wanted,
    generator: () => "Deno client",
    async run(server, ctx, checked) {
      const n = Math.min(wanted, ctx.heldMax ?? wanted);
      const held = await holdOpen(
        server.child.pid,
        server.port,
        n,
        protocol(server, checked),
        {
          processPerConnection,
          exited: () => server.exited,
          exitNote:
            server.spec.kind === "book" && server.spec.label.startsWith("2_3")
              ? "the book's select() cannot watch descriptors past 1,024 (FD_SETSIZE)"
              : undefined,
        },
      );
      return {
        count: 0,
        seconds: 0,
        p50: held.startMs ?? NaN,
        p99: NaN,
        errors: {},
        notes: [],
        held,
      };
    },
  };
}

/** "10,000 held open" */
export function heldLabel(n: number): string {
  return `${n.toLocaleString("en-US")} held open`;
}

/** Held connections per scenario: past what select() can watch, and 2_1/2_2's cap. */
const HELD = 10_000;
const HELD_CHAT = 2_000;
const HELD_CAP = 40;

const PEER_READY = /Listening on 127\.0\.0\.1:(\d+)/;
const LISTENING = /Listening on \S+:(\d+)/;

function http(wrkPrefix: string[] | undefined): Scenario {
  return {
    id: "2_4",
    title: "2_4 epoll web server: one request per connection",
    unit: "requests/s",
    async servers(versus) {
      return lineUp("2_4", await ours2_4(), [
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
      ], versus);
    },
    async check(server) {
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
    },
    loads: [{
      label: "50 connections",
      generator: () => wrkPrefix ? "wrk -t1 -c50" : "Deno generator",
      run: (server, _ctx, checked, phases) =>
        wrkPrefix
          ? wrkLoad(
            wrkPrefix,
            server.port,
            50,
            phases,
            checked.closesWithoutHeader ?? false,
          )
          : httpLoad(
            server.port,
            50,
            phases,
            server.spec.kind === "vs" ? undefined : BODY,
          ),
    }, memoryLoad(HELD, () => httpHold)],
  };
}

function ours2_4() {
  return ours(
    "2_4",
    "2_4_simple_web_server_with_epoll.ts",
    [],
    /Listening on http:\/\/[^/\s]+:(\d+)\//,
  );
}

const echo: Scenario = {
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
  async check(server) {
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
    return {};
  },
  loads: [
    ...[1, 50, 500].map((n): Load => ({
      label: `${n} connection${n === 1 ? "" : "s"}`,
      generator: () => "Deno generator",
      run: (server, _ctx, _checked, phases) => echoLoad(server.port, n, phases),
    })),
    memoryLoad(HELD, () => echoHold),
  ],
};

function chat(vsFrame: "pickle" | "json"): Scenario {
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
    async check(server) {
      const { kind } = server.spec;
      const pickle = kind === "book" || (kind === "vs" && vsFrame === "pickle");
      const format = pickle
        ? await pickleFormat(chatTexts(CHAT_CLIENTS))
        : JSON_FORMAT;
      try {
        await checkChat(server.port, format);
      } catch (error) {
        throw new Error(
          `check (${format.name} frames): ${(error as Error).message}`,
        );
      }
      const holdFormat = pickle
        ? await pickleFormat(holdNames(HELD_CHAT).map((n) => `NAME: ${n}`))
        : JSON_FORMAT;
      return { chatFormat: format, holdFormat };
    },
    loads: [
      ...[1, 8].map((w): Load => ({
        label: `W = ${w}`,
        generator: () => "Deno generator",
        run: (server, _ctx, checked, phases) =>
          chatLoad(
            server.port,
            checked.chatFormat ?? JSON_FORMAT,
            CHAT_CLIENTS,
            w,
            phases,
          ),
      })),
      memoryLoad(
        HELD_CHAT,
        (_server, checked) =>
          chatHold(checked.holdFormat ?? JSON_FORMAT, holdNames(HELD_CHAT)),
      ),
    ],
  };
}

/** The names of the memory scenario's chat clients. */
function holdNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `hold${i}`);
}

function perConnection(id: string, file: string, title: string): Scenario {
  return {
    id,
    title,
    unit: "connections/s",
    async servers(versus) {
      const ourServer = await ours(id, file, ["--serve"], LISTENING);
      return lineUp(id, ourServer, [], versus);
    },
    async check(server) {
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
      return {};
    },
    loads: [
      ...[1, 10].map((c): Load => ({
        label: `concurrency ${c}`,
        generator: () => "Deno generator",
        run: (server, _ctx, _checked, phases) =>
          oneShotLoad(server.port, c, phases, server.spec.kind === "book"),
      })),
      memoryLoad(HELD_CAP, () => oneShotHold, id === "2_1"),
    ],
  };
}

/** The scenarios' ids, in the order they run. */
export const SCENARIO_IDS = ["2_1", "2_2", "2_3", "2_4", "2_5"];

/** The five scenarios, in the order of SCENARIO_IDS. */
export function scenarios(options: ScenarioOptions): Scenario[] {
  return [
    perConnection(
      "2_1",
      "2_1_forking_mixin_socket_server.ts",
      "2_1 forking server: a process per connection",
    ),
    perConnection(
      "2_2",
      "2_2_threading_mixin_socket_server.ts",
      "2_2 threading server: a Worker per connection",
    ),
    chat(options.vsFrame),
    http(options.wrkPrefix),
    echo,
  ];
}
