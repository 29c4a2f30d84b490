/**
 * Real transcripts for the READMEs: each session below runs a recipe the way
 * the README tells a reader to, with real processes and sockets, and returns
 * what the reader's terminals would show.
 *
 *     deno task transcripts     # rewrite the transcript blocks of both READMEs
 *
 * tests/readme_test.ts runs the same sessions and checks that the READMEs
 * still show what the scripts print now, numbers such as PIDs and ports aside.
 * The real port is shown as 8800, the port the READMEs' commands use.
 */
import {
  ALLOW_NET,
  bookScript,
  have,
  Recipe,
  run,
  startRecipe,
  TestClient,
  withStderrJoined,
} from "./harness.ts";

/**
 * Sessions that need peer programs (comma-separated; or, as "BOOK_DIR",
 * the book's own scripts), which the README test skips without.
 */
export const NEEDS: Record<string, string> = {
  "2_4": "curl",
  "2_4-trace": "curl,python3",
  "2_3-book": "BOOK_DIR",
};

export const README_FILES = ["README.md", "README.ko.md"];
const SHOWN_PORT = "8800";

/** One terminal: its command line, then what it printed (a terminal hides "\r"). */
function terminal(command: string, output: string): string {
  return `$ ${command}\n${output.replaceAll("\r", "").trimEnd()}`;
}

/** Shows the real port as the README's 8800. */
function showPort(text: string, port: number): string {
  return text.replaceAll(String(port), SHOWN_PORT);
}

/** `deno task 2_1`: the book's demo; handler lines come on stderr. */
async function forkingSession(): Promise<string> {
  await using demo = await startRecipe("2_1_forking_mixin_socket_server.ts", {
    permissions: [ALLOW_NET, "--allow-run=deno"],
    ready: /Second client running\n/,
    port: false,
  });
  await demo.exit();
  // Each handler process writes its line to the shared terminal before it
  // answers, so on a terminal it stands just before the client's "received".
  const handlerLines = demo.stderr.split("\n").filter((l) => l !== "");
  const lines = demo.stdout.trimEnd().split("\n").flatMap((line) =>
    / received: /.test(line) ? [handlerLines.shift() ?? "", line] : [line]
  );
  return terminal("deno task 2_1", lines.join("\n"));
}

/** `deno task 2_2`: the book's demo. */
async function threadingSession(): Promise<string> {
  await using demo = await startRecipe("2_2_threading_mixin_socket_server.ts", {
    permissions: [
      ALLOW_NET,
      "--allow-read=2_2_threading_mixin_socket_server.ts",
    ],
    ready: /Hello from client 3\n/,
    port: false,
  });
  await demo.exit();
  return terminal("deno task 2_2", demo.stdout);
}

/** What each terminal of a chat conversation printed, and the real port. */
interface ChatOutput {
  port: number;
  server: { stdout: string; stderr: string };
  client1: string;
  client2: string;
}

/**
 * The book's conversation: a server (with `serverArgs`) and two clients;
 * client1 and client2 exchange a line, client2 is interrupted (Ctrl-C), then
 * a line on the server's stdin stops it.
 */
async function chatConversation(serverArgs: string[]): Promise<ChatOutput> {
  const file = "2_3_chat_server_with_select.ts";
  await using server = await startRecipe(file, {
    args: ["--name=server", ...serverArgs],
    ready: /Server listening to port: (\d+) \.\.\.\n/,
  });
  const client = async (name: string) => {
    const started = await startRecipe(file, {
      args: [`--name=${name}`, `--port=${server.port}`],
      ready: /Now connected to chat server@ port \d+\n/,
      port: false,
    });
    await started.waitFor(`[${name}@127.0.0.1]> `);
    return started;
  };
  await using client1 = await client("client1");
  await using client2 = await client("client2");
  await client1.waitFor("(Connected: New client (2) from client2@127.0.0.1)");
  await client1.write("Hello from client1\n");
  await client2.waitFor(">>Hello from client1\n");
  await client2.write("Hi client1, this is client2\n");
  await client1.waitFor(">>Hi client1, this is client2\n");
  client2.kill("SIGINT");
  await client2.exit();
  await client1.waitFor("(Now hung up: Client from client2@127.0.0.1)");
  await server.write("\n");
  await server.exit();
  await client1.exit();
  return {
    port: server.port,
    server: { stdout: server.stdout, stderr: server.stderr },
    client1: client1.stdout,
    client2: client2.stdout,
  };
}

/** The book's conversation in three terminals. */
async function chatSession(): Promise<string> {
  const { port, server, client1, client2 } = await chatConversation([]);
  const command = (name: string) => `deno task 2_3 --name=${name} --port=8800`;
  return [
    terminal(command("server"), showPort(server.stdout, port)),
    terminal(command("client1"), showPort(client1, port)),
    terminal(command("client2"), showPort(client2, port)),
  ].join("\n\n");
}

/**
 * 2_3 traced: the same conversation, shown as the server's terminal and its
 * trace.log (stderr), as after
 * `deno task 2_3 --name=server --port=8800 --trace 2>trace.log`.
 */
async function chatTracedSession(): Promise<string> {
  const { port, server } = await chatConversation(["--trace"]);
  return [
    terminal(
      "deno task 2_3 --name=server --port=8800 --trace 2>trace.log",
      showPort(server.stdout, port),
    ),
    terminal("cat trace.log", showPort(server.stderr, port)),
  ].join("\n\n");
}

/** The web server, and curl from a second terminal. */
async function epollSession(): Promise<string> {
  await using server = await startRecipe("2_4_simple_web_server_with_epoll.ts");
  const url = `http://localhost:${server.port}/`;
  const curl = await run("curl", ["-sS", "--max-time", "10", url]);
  await server.waitFor(/User-Agent: curl\/[^]*?\n\n/);
  server.kill("SIGINT");
  await server.exit();
  return [
    terminal("deno task 2_4 --port=8800", showPort(server.stdout, server.port)),
    terminal("curl http://localhost:8800/", curl.stdout),
  ].join("\n\n");
}

/**
 * 2_4 with `--trace`: the same curl request, and the loop's steps on stderr,
 * shown as a terminal shows both: the server runs with its stderr joined to
 * its stdout (by a python3 launcher), so the lines come in the order it
 * wrote them.
 */
async function epollTraceSession(): Promise<string> {
  const file = "2_4_simple_web_server_with_epoll.ts";
  await using server = withStderrJoined(file, [
    "deno",
    "run",
    "--quiet",
    "--allow-net=localhost,127.0.0.1",
    file,
    "--trace",
    "--port=0",
  ]);
  const port = Number((await server.waitFor(/Listening on \S+:(\d+)/))[1]);
  const url = `http://localhost:${port}/`;
  await run("curl", ["-sS", "--max-time", "10", url]);
  await server.waitFor(/EPOLLHUP, closed\n/);
  server.kill("SIGINT");
  await server.exit();
  return terminal(
    "deno task 2_4 --port=8800 --trace",
    showPort(server.stdout, port),
  );
}

/** The echo server, and one nc session typing two lines. */
async function echoSession(): Promise<string> {
  await using server = await startRecipe("2_5_echo_server_with_diesel.ts");
  const typed = ["Hello Diesel", "안녕하세요"];
  await using client = await TestClient.connect(server.port);
  const clientView: string[] = [];
  for (const line of typed) {
    await client.write(`${line}\n`);
    clientView.push(line, (await client.readLine()).trimEnd());
  }
  client.close();
  await server.waitFor(/disconnected\n/);
  server.kill("SIGINT");
  await server.exit();
  return [
    terminal("deno task 2_5 --port=8800", showPort(server.stdout, server.port)),
    terminal("nc localhost 8800", clientView.join("\n")),
  ].join("\n\n");
}

/** The sessions by README block name. */
export const SESSIONS: Record<string, () => Promise<string>> = {
  "2_1": forkingSession,
  "2_2": threadingSession,
  "2_3": chatSession,
  "2_4": epollSession,
  "2_5": echoSession,
  // Each recipe with --trace: its terminal, then the trace.log it wrote.
  "2_1-trace": () =>
    tracedSession(
      "2_1",
      "2_1_forking_mixin_socket_server.ts",
      [ALLOW_NET, "--allow-run=deno"],
      /exited with code 0/,
    ),
  "2_2-trace": () =>
    tracedSession(
      "2_2",
      "2_2_threading_mixin_socket_server.ts",
      [ALLOW_NET, "--allow-read=2_2_threading_mixin_socket_server.ts"],
      /; terminated/,
    ),
  "2_3-trace": chatTracedSession,
  "2_4-trace": epollTraceSession,
  "2_5-trace": echoTracedSession,
  // One chat room with the book's own Python client.
  "2_3-book": bookRoomSession,
};

/**
 * A traced per-connection server (2_1 or 2_2): its terminal, one nc client,
 * then the trace it wrote to trace.log (its stderr), as a reader would see it
 * after `deno task 2_x --serve --port=8800 --trace 2>trace.log` and Ctrl-C.
 */
async function tracedSession(
  task: string,
  file: string,
  permissions: string[],
  ended: RegExp,
): Promise<string> {
  await using server = await startRecipe(file, {
    args: ["--serve", "--trace"],
    permissions,
  });
  await using client = await TestClient.connect(server.port);
  await client.write("Hello echo server!");
  await client.closeWrite(); // what nc -N does at the end of its input
  const reply = new TextDecoder().decode(await client.readUntilClose());
  client.close();
  await server.waitFor(ended);
  server.kill("SIGINT");
  await server.exit();
  return [
    terminal(
      `deno task ${task} --serve --port=8800 --trace 2>trace.log`,
      showPort(server.stdout, server.port),
    ),
    terminal("printf 'Hello echo server!' | nc -N localhost 8800", reply),
    terminal("cat trace.log", showPort(server.stderr, server.port)),
  ].join("\n\n");
}

/**
 * 2_5 traced: two nc clients take turns, and trace.log (the server's stderr)
 * shows the one loop serving both, as after
 * `deno task 2_5 --port=8800 --trace 2>trace.log` and Ctrl-C.
 */
async function echoTracedSession(): Promise<string> {
  await using server = await startRecipe("2_5_echo_server_with_diesel.ts", {
    args: ["--trace"],
  });
  await using first = await TestClient.connect(server.port);
  await server.waitFor(/connected from/);
  await using second = await TestClient.connect(server.port);
  await server.waitFor(/connected from/);
  const views: string[][] = [[], []];
  for (
    const [client, view, line] of [
      [first, views[0], "Hello Diesel"],
      [second, views[1], "Hi from the second terminal"],
      [first, views[0], "Still here"],
    ] as const
  ) {
    await client.write(`${line}\n`);
    view.push(line, (await client.readLine()).trimEnd());
  }
  first.close();
  await server.waitFor(/disconnected\n/);
  second.close();
  await server.waitFor(/disconnected\n/);
  server.kill("SIGINT");
  await server.exit();
  return [
    terminal(
      "deno task 2_5 --port=8800 --trace 2>trace.log",
      showPort(server.stdout, server.port),
    ),
    terminal("nc localhost 8800", views[0].join("\n")),
    terminal("nc localhost 8800", views[1].join("\n")),
    terminal("cat trace.log", showPort(server.stderr, server.port)),
  ].join("\n\n");
}

/**
 * One room for both wires: this server, the book's own Python client (from
 * BOOK_DIR) and a Deno client, as in "Run it beside the book's own scripts".
 */
async function bookRoomSession(): Promise<string> {
  const file = "2_3_chat_server_with_select.ts";
  const book = bookScript("2_3_chat_server_with_select.py");
  if (book.path === undefined) throw new Error(book.skip);
  await using server = await startRecipe(file, {
    args: ["--name=server"],
    ready: /Server listening to port: (\d+) \.\.\.\n/,
  });
  // python3 -u: the book's client prints through a pipe as it would to a
  // terminal, line by line.
  await using python = new Recipe("the book's 2_3", [
    "-u",
    book.path,
    "--name=client1",
    `--port=${server.port}`,
  ], "python3");
  await python.waitFor("[client1@127.0.0.1]> ");
  await using deno = await startRecipe(file, {
    args: ["--name=client2", `--port=${server.port}`],
    ready: /Now connected to chat server@ port \d+\n/,
    port: false,
  });
  await deno.waitFor("[client2@127.0.0.1]> ");
  await python.waitFor("(Connected: New client (2) from client2@127.0.0.1)");
  await python.write("Hello from the book's Python client\n");
  await deno.waitFor(">>Hello from the book's Python client\n");
  await deno.write("안녕하세요, this is Deno\n");
  await python.waitFor(">>안녕하세요, this is Deno\n");
  deno.kill("SIGINT");
  await deno.exit();
  await python.waitFor("(Now hung up: Client from client2@127.0.0.1)");
  await server.write("\n");
  await server.exit();
  await python.exit();
  return [
    terminal(
      "deno task 2_3 --name=server --port=8800",
      showPort(server.stdout, server.port),
    ),
    terminal(
      "python3 $BOOK_DIR/2_3_chat_server_with_select.py --name=client1 --port=8800",
      showPort(python.stdout, server.port),
    ),
    terminal(
      "deno task 2_3 --name=client2 --port=8800",
      showPort(deno.stdout, server.port),
    ),
  ].join("\n\n");
}

/** Why session `name` cannot run here (its peer is missing), or undefined. */
export function missingPeer(name: string): string | undefined {
  const needs = NEEDS[name];
  if (needs === undefined) return undefined;
  if (needs === "BOOK_DIR") {
    return bookScript("2_3_chat_server_with_select.py").skip;
  }
  const missing = needs.split(",").find((program) => !have(program));
  return missing === undefined ? undefined : `no ${missing}`;
}

/** Hides what differs from run to run: PIDs, ports, connection numbers, timings. */
export function normalize(text: string): string {
  return text.replace(/\d+\.\d ms\b/g, "N ms") // timings in --trace lines
    // A reply that carries a PID is as long as the PID has digits.
    .replace(/(handler PID \d+ replied )\d+( bytes)/g, "$1N$2")
    .replace(/curl\/[\d.]+/g, "curl/N").replace(/\d{3,}/g, "N");
}

const BLOCK =
  /<!-- transcript (\S+) -->\n\n?```text\n([\s\S]*?)```\n\n?<!-- \/transcript -->/g;

/** The transcript blocks of a README, by session name. */
export function transcriptBlocks(markdown: string): Map<string, string> {
  return new Map([...markdown.matchAll(BLOCK)].map((m) => [m[1], m[2]]));
}

/** The README with each named block's text replaced. */
export function replaceBlocks(
  markdown: string,
  texts: Map<string, string>,
): string {
  return markdown.replace(BLOCK, (whole, name) => {
    const text = texts.get(name);
    return text === undefined
      ? whole
      : `<!-- transcript ${name} -->\n\n\`\`\`text\n${text}\n\`\`\`\n\n<!-- /transcript -->`;
  });
}

if (import.meta.main) {
  const texts = new Map<string, string>();
  for (const [name, session] of Object.entries(SESSIONS)) {
    const missing = missingPeer(name);
    if (missing) {
      console.log(`skipping ${name} (${missing}): its blocks stay as they are`);
      continue;
    }
    console.log(`capturing ${name} ...`);
    texts.set(name, await session());
  }
  for (const file of README_FILES) {
    const path = new URL(`../${file}`, import.meta.url);
    const before = await Deno.readTextFile(path);
    await Deno.writeTextFile(path, replaceBlocks(before, texts));
    console.log(`updated ${file}`);
  }
}
