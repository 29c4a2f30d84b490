import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
} from "@std/assert";
import {
  addressCases,
  assertArgparse,
  assertCtrlCUnderTask,
  assertPortInUse,
  bookScript,
  DENO,
  have,
  pluralCases,
  previewCases,
  resetAfterSending,
  run,
  servedAfterResets,
  startRecipe,
  TestClient,
} from "./harness.ts";
import {
  address,
  plural,
  preview,
} from "../2_1_forking_mixin_socket_server.ts";

const FILE = "2_1_forking_mixin_socket_server.ts";
// What `deno task 2_1` grants: the recipe spawns `deno` from PATH.
const PERMISSIONS = ["--allow-net=localhost,127.0.0.1", "--allow-run=deno"];
// The ready lines the benchmark relies on, exactly; group 1 is the port.
const READY =
  /^Server loop running PID: \d+\nListening on 127\.0\.0\.1:(\d+)\n/;
const SERVE = { args: ["--serve"], permissions: PERMISSIONS, ready: READY };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Local helper: which of `pids` still exist. Deno.kill needs blanket
 * --allow-run, which the test permission set does not give; `deno eval`
 * (allowed as "deno", and run with all permissions) sends each one SIGCONT
 * (harmless; Deno.kill has no signal 0) and prints the PIDs that exist.
 */
async function alive(pids: number[]): Promise<number[]> {
  const code = `for (const pid of Deno.args) {
    try { Deno.kill(Number(pid), "SIGCONT"); console.log(pid); }
    catch (e) { if (!(e instanceof Deno.errors.NotFound)) console.log(pid); }
  }`;
  const result = await run(DENO, ["eval", code, ...pids.map(String)]);
  assertEquals(result.code, 0, result.stderr);
  return result.stdout.split("\n").filter(Boolean).map(Number);
}

/** Local helper: SIGKILL one process (see `alive` for why `deno eval`). */
async function killPid(pid: number): Promise<void> {
  const code = `Deno.kill(${pid}, "SIGKILL")`;
  assertEquals((await run(DENO, ["eval", code])).code, 0);
}

/** The bytes `<pid>: <data>` a handler process answers. */
function reply(pid: number, data: Uint8Array): Uint8Array {
  const prefix = encoder.encode(`${pid}: `);
  const bytes = new Uint8Array(prefix.length + data.length);
  bytes.set(prefix);
  bytes.set(data, prefix.length);
  return bytes;
}

/** Sends `data` in one write, checks the whole reply, returns its PID. */
async function exchange(port: number, data: Uint8Array) {
  await using client = await TestClient.connect(port);
  await client.write(data);
  const answer = await client.readUntilClose(20_000);
  const pid = Number(decoder.decode(answer).match(/^(\d+): /)?.[1]);
  assertEquals(answer, reply(pid, data.subarray(0, 1024)));
  return pid;
}

/**
 * The book's demo: a server, two clients, each reply from a new handler process
 * with its own PID, and each handler's log line on the shared stderr.
 */
Deno.test("2_1: the book's demo prints its lines, each reply from a new process", async () => {
  const demo = await run(DENO, ["run", "--quiet", ...PERMISSIONS, FILE]);
  assertEquals(demo.code, 0, demo.stderr);
  const server = demo.stdout.match(/^Server loop running PID: (\d+)\n/)?.[1];
  assert(server, demo.stdout);
  const sending =
    `PID ${server} Sending echo message to the server : "Hello echo server!"\n` +
    `Sent: 18 characters, so far...\n`;
  const expected = new RegExp(
    `^Server loop running PID: ${server}\n` +
      `${sending}PID ${server} received: (\\d+): Hello echo server!\n` +
      `First client running\n` +
      `${sending}PID ${server} received: (\\d+): Hello echo server!\n` +
      `Second client running\n$`,
  );
  const [, first, second] = demo.stdout.match(expected) ?? [];
  assert(first && second, `unexpected demo output:\n${demo.stdout}`);
  assertNotEquals(first, server);
  assertNotEquals(second, server);
  assertNotEquals(first, second);
  // The handler processes log on the terminal they share with the server.
  const said = (pid: string) =>
    `Server sending response [current_process_id: data] = [${pid}: Hello echo server!]\n`;
  assertEquals(demo.stderr, said(first) + said(second));
});

/**
 * Forking under load: 20 clients at once get 20 whole 1 KiB echoes from 20
 * different handler processes, none of them the server itself.
 */
Deno.test("2_1: 20 concurrent 1 KiB requests, each answered by its own process", async () => {
  await using server = await startRecipe(FILE, SERVE);
  const serverPid = Number(
    server.stdout.match(/^Server loop running PID: (\d+)\nListening on /)?.[1],
  );
  assert(serverPid > 0, server.stdout);
  const pids = await Promise.all(Array.from({ length: 20 }, (_, i) => {
    const data = encoder.encode(`client ${i} `.padEnd(1024, String(i % 10)));
    return exchange(server.port, data);
  }));
  assertEquals(new Set(pids).size, 20, `handler PIDs: ${pids}`);
  assert(!pids.includes(serverPid), "no reply comes from the server itself");
});

/**
 * A handler reads once, at most 1024 bytes; a UTF-8 character cut by that limit
 * shows in the log as U+FFFD instead of throwing.
 */
Deno.test("2_1: one read of at most 1024 bytes; a character cut in two does not throw", async () => {
  await using server = await startRecipe(FILE, SERVE);
  // 1023 ASCII bytes then "é" (2 bytes): the read ends inside the "é".
  const data = encoder.encode("a".repeat(1023) + "é and more");
  const pid = await exchange(server.port, data);
  await server.waitFor(`Handler PID ${pid} exited with code 0`);
  assertMatch(server.stderr, new RegExp(`\\[${pid}: a{1023}\uFFFD\\]\n`));
  assert(!server.stderr.includes("trace:"), "no trace without --trace");
});

/**
 * A client that connects and closes without sending is logged, its handler
 * exits 0, and the next client is served.
 */
Deno.test("2_1: a client that leaves without sending is logged; the server goes on", async () => {
  await using server = await startRecipe(FILE, SERVE);
  {
    await using _silent = await TestClient.connect(server.port);
    await server.waitFor(
      /Handler PID \d+ started for 127\.0\.0\.1:\d+ \(1 of 40/,
    );
  }
  const [, pid] = await server.waitFor(/Handler PID (\d+) exited with code 0/);
  assertMatch(
    server.stderr,
    new RegExp(`Handler PID ${pid}: client left without sending\n`),
  );
  await exchange(server.port, encoder.encode("still there?"));
});

/**
 * Each handler is its own process: SIGKILL one and only its client is
 * disconnected; the server serves the next.
 */
Deno.test("2_1: killing a handler process closes only its connection", async () => {
  await using server = await startRecipe(FILE, SERVE);
  await using victim = await TestClient.connect(server.port);
  const [, pid] = await server.waitFor(/Handler PID (\d+) started/);
  assertEquals(await alive([Number(pid)]), [Number(pid)]);
  await killPid(Number(pid));
  await server.waitFor(`Handler PID ${pid} was killed by SIGKILL`);
  assert(await victim.closedByPeer(), "the victim's connection is closed");
  await exchange(server.port, encoder.encode("after the kill"));
});

/**
 * With --timeout=1 a handler whose client sends nothing is killed after one
 * second, and its client is told why in one line, then disconnected.
 */
Deno.test("2_1: a client that never sends is told, then cut off at --timeout", async () => {
  await using server = await startRecipe(FILE, {
    ...SERVE,
    args: ["--serve", "--timeout=1"],
  });
  await using silent = await TestClient.connect(server.port);
  const [, pid] = await server.waitFor(
    /Handler PID (\d+) timed out after 1 s, killing it\n/,
  );
  await server.waitFor(`Handler PID ${pid} was killed by SIGKILL`);
  assertEquals(
    decoder.decode(await silent.readUntilClose()),
    "Timed out after 1 s: closing the connection.\r\n",
  );
});

/**
 * At most 40 handler processes run at once; the other connections wait their
 * turn, every client is answered, and the logged running count is right at
 * every step.
 */
Deno.test("2_1: 100 concurrent connections never hold more than 40 handlers", async () => {
  // This test is about the limit: a long --timeout keeps a handler that
  // waited for 40 others to start on a busy machine from being cut off.
  await using server = await startRecipe(FILE, {
    ...SERVE,
    args: ["--serve", "--timeout=120"],
  });
  const clients = await Promise.all(
    Array.from({ length: 100 }, () => TestClient.connect(server.port)),
  );
  try {
    // Nobody has sent yet, so every handler is busy: the server is full.
    await server.waitFor(/\(40 of 40 running\)\n/, 30_000);
    await Promise.all(clients.map(async (client, i) => {
      await client.write(`client ${i}`);
      const answer = decoder.decode(await client.readUntilClose(60_000));
      assertMatch(answer, new RegExp(`^\\d+: client ${i}$`));
    }));
  } finally {
    for (const client of clients) client.close();
  }
  for (let i = 0; i < 100; i++) {
    await server.waitFor(/Handler PID \d+ exited with code 0/);
  }
  // Replay the server's own start/exit log: its count is right at every
  // step, and it never passes 40.
  let running = 0, peak = 0, started = 0;
  for (
    const [, event, count] of server.stdout.matchAll(
      /Handler PID \d+ (started|exited).*\((\d+) of 40 running\)/g,
    )
  ) {
    running += event === "started" ? 1 : -1;
    started += event === "started" ? 1 : 0;
    assertEquals(Number(count), running);
    peak = Math.max(peak, running);
  }
  assertEquals([started, peak, running], [100, 40, 0]);
  server.kill("SIGTERM");
  assertEquals((await server.exit()).code, 0);
  assertMatch(server.stdout, /Peak: 40 of 40; 0 left running\n$/);
});

/**
 * Either signal makes the server kill and reap every handler, close every
 * client with a shutdown line (not a failure), and exit 0, leaving no handler
 * process behind.
 */
Deno.test("2_1: SIGTERM and SIGINT kill and reap every handler, close every client, exit 0", async () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    await using server = await startRecipe(FILE, SERVE);
    const clients = await Promise.all(
      Array.from({ length: 3 }, () => TestClient.connect(server.port)),
    );
    const pids: number[] = [];
    for (let i = 0; i < 3; i++) {
      pids.push(Number((await server.waitFor(/Handler PID (\d+) started/))[1]));
    }
    assertEquals((await alive(pids)).length, 3, "the handlers run");
    server.kill(signal);
    assertEquals((await server.exit()).code, 0, server.transcript);
    assertMatch(server.stdout, /Shutting down: killing 3 handlers\.\.\.\n/);
    // The lines at shutdown say shutdown, not a failure.
    for (const pid of pids) {
      assertMatch(
        server.stdout,
        new RegExp(`PID ${pid} closed by server shutdown \\(\\d of 40`),
      );
    }
    assert(!/killed by|not delivered/.test(server.stdout), server.stdout);
    assertMatch(server.stdout, /Peak: 3 of 40; 0 left running\n$/);
    for (const client of clients) {
      assert(await client.closedByPeer(), `a client is closed on ${signal}`);
      client.close();
    }
    assertEquals(await alive(pids), [], "no handler process is left");
  }
});

/** A client that sends its line and resets before the reply ends only its own connection: the server is still there for the next. */
Deno.test({
  name: "2_1: a client that resets before its reply does not end the server",
  ignore: !have("python3"),
  async fn() {
    await using server = await startRecipe(FILE, SERVE);
    assert(await resetAfterSending(server.port, "hello\n", 5));
    await exchange(server.port, encoder.encode("after the resets"));
    assert(!/Uncaught|error:/.test(server.stderr), server.transcript);
  },
});

/** A reset in the accept queue is one client's failure: no pause for the next. */
Deno.test({
  name: "2_1: 100 connections reset while queued do not delay the next client",
  ignore: !have("python3"),
  async fn() {
    await using server = await startRecipe(FILE, SERVE);
    await servedAfterResets(
      server.port,
      () => exchange(server.port, encoder.encode("after the resets")),
    );
    assertMatch(server.stdout, /accept failed: .*os error 107/);
    assert(!/pausing/.test(server.stdout), "no pause for a reset");
  },
});

/**
 * A terminal's Ctrl-C under `deno task` reaches the task runner and the
 * script at once, and the runner forwards one more: each time, one shutdown
 * line and exit 0 (never 130).
 */
Deno.test("2_1: Ctrl-C under `deno task 2_1 --serve`: one shutdown line, exit 0, every time", async () => {
  await assertCtrlCUnderTask("2_1", {
    args: ["--serve"],
    ready: READY,
    rounds: 20,
    shutdown: /Shutting down/,
    check: (task) =>
      assertMatch(task.stdout, /\nPeak: 0 of 40; 0 left running\n$/),
  });
});

/**
 * Handlers are spawned as `deno`, so --allow-run may name deno or this Deno
 * binary's path.
 */
Deno.test("2_1: --allow-run naming this Deno binary works too", async () => {
  await using server = await startRecipe(FILE, {
    args: ["--serve"],
    permissions: [PERMISSIONS[0], `--allow-run=${Deno.execPath()}`],
  });
  await exchange(server.port, encoder.encode("by path"));
});

/**
 * Without a permission it needs (none, no --allow-run, or no --allow-net),
 * the server prompts for nothing: one error gives the whole command that
 * works, with the arguments it was given, and `deno task 2_1`; exit 1.
 */
Deno.test("2_1: a missing permission is one error with the whole command that works", async () => {
  const path = new URL(`../${FILE}`, import.meta.url).pathname;
  for (const given of [[], [PERMISSIONS[0]], [PERMISSIONS[1]]]) {
    const denied = await run(DENO, [
      "run",
      "--no-prompt",
      ...given,
      FILE,
      "--serve",
      "--port=0",
    ]);
    assertEquals(denied.code, 1, `${given}: ${denied.stderr}`);
    assertEquals(
      denied.stderr,
      `Error: the server needs ${PERMISSIONS.join(" ")} (its handlers are ` +
        `deno processes); run it as\n` +
        `  deno run ${PERMISSIONS.join(" ")} ${path} --serve --port=0\n` +
        `or, in the recipe's folder,\n  deno task 2_1 --serve --port=0\n`,
      `given ${given.join(" ") || "no permission"}`,
    );
  }
});

/**
 * A count in a printed line is in good English: one handler, not "1
 * handlers", at shutdown and in a trace's byte counts.
 */
Deno.test("2_1: one handler at shutdown is 'killing 1 handler'", async () => {
  await using server = await startRecipe(FILE, SERVE);
  await using client = await TestClient.connect(server.port);
  await server.waitFor(/\(1 of 40 running\)\n/);
  server.kill("SIGTERM");
  assertEquals((await server.exit()).code, 0, server.transcript);
  assertMatch(server.stdout, /\nShutting down: killing 1 handler\.\.\.\n/);
  assert(await client.closedByPeer());
});

/** Counts in good English (the harness's pluralCases). */
Deno.test("2_1: plural() counts in good English", () => {
  for (const [count, noun, text] of pluralCases()) {
    assertEquals(plural(count, noun), text);
  }
});

/** An IPv6 address is printed in brackets beside its port, as in a URL (the harness's addressCases). */
Deno.test("2_1: address() brackets IPv6 and leaves IPv4 as the book prints it", () => {
  for (const [hostname, text] of addressCases()) {
    assertEquals(address({ transport: "tcp", hostname, port: 8800 }), text);
  }
});

/** A trace preview shows printable UTF-8 as text and escapes the rest (the harness's previewCases). */
Deno.test("2_1: preview() shows printable UTF-8 as text and escapes the rest", () => {
  for (const [data, shown] of previewCases()) {
    assertEquals(preview(data), shown);
  }
});

/**
 * The command line behaves as Python's argparse: --help exits 0; a bad port,
 * timeout or flag prints the usage and one error line and exits 2.
 */
Deno.test("2_1: --help exits 0; bad arguments exit 2 with argparse's usage", () =>
  assertArgparse(FILE, /^usage: .*\[--serve\] \[--port PORT\]/, [
    [["--port=abc"], /argument --port: invalid .*'abc'$/],
    [["--port=70000"], /argument --port: invalid .*'70000'$/],
    [["--timeout=0"], /--timeout/],
    [["-x"], /unrecognized arguments: -x$/],
  ]));

/**
 * A second server on a port already in use prints one error line and exits 1.
 */
Deno.test("2_1: a port already in use is a one-line error and exit 1", async () => {
  await using server = await startRecipe(FILE, SERVE);
  await assertPortInUse(
    FILE,
    ["--serve", `--port=${server.port}`],
    PERMISSIONS,
  );
});

/**
 * A real netcat client, sending a line and closing its side, gets `<pid>: ` and
 * its line back.
 */
Deno.test({
  name: "2_1: a real nc client gets its reply",
  ignore: !have("nc"),
  async fn() {
    await using server = await startRecipe(FILE, SERVE);
    const nc = await run("nc", ["-N", "127.0.0.1", String(server.port)], {
      input: "hello from netcat\n",
    });
    assertMatch(nc.stdout, /^\d+: hello from netcat\n$/);
  },
});
if (!have("nc")) console.warn("skipping the nc test: nc is not installed");

/**
 * The book's own client code, loaded by path from the reader's copy (the
 * module name starts with a digit, so `import` cannot name it), as the book's
 * main() uses it: two ForkedClients in turn, then both shut down.
 */
const BOOK_CLIENTS = `
import importlib.util, sys
spec = importlib.util.spec_from_file_location("book_2_1", sys.argv[1])
book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book)
port = int(sys.argv[2])
client1 = book.ForkedClient("127.0.0.1", port)
client1.run()
client2 = book.ForkedClient("127.0.0.1", port)
client2.run()
client1.shutdown()
client2.shutdown()
`;
const book = bookScript("2_1_forking_mixin_socket_server.py");

/** The book's ForkedClient speaks to our server and gets its handler's reply. */
Deno.test({
  name: "2_1: the book's ForkedClient gets the right replies from --serve",
  ignore: !book.path,
  async fn() {
    await using server = await startRecipe(FILE, SERVE);
    const python = await run("python3", [
      "-c",
      BOOK_CLIENTS,
      book.path!,
      String(server.port),
    ]);
    assertEquals(python.code, 0, python.stderr);
    const [, client] = python.stdout.match(/^PID (\d+) /) ?? [];
    const handlers: string[] = [];
    for (let i = 0; i < 2; i++) {
      handlers.push((await server.waitFor(/Handler PID (\d+) started/))[1]);
    }
    assertNotEquals(handlers[0], handlers[1]);
    // The book prints response[5:] of the bytes: its repr, cut after 5 bytes.
    const sent = `PID ${client} Sending echo message to the server : ` +
      `"Hello echo server!"\nSent: 18 characters, so far...\n`;
    const received = (pid: string) =>
      `PID ${client} received: b'${`${pid}: Hello echo server!`.slice(5)}'\n`;
    assertEquals(
      python.stdout,
      sent + received(handlers[0]) + sent + received(handlers[1]),
    );
    for (const pid of handlers) {
      await server.waitFor(`Handler PID ${pid} exited with code 0`);
    }
  },
});
if (book.skip) console.warn(`skipping the book's client test: ${book.skip}`);

/**
 * --trace shows each connection's steps in ForkingMixIn's terms, the
 * handler's own steps from its process, with client data only as a short
 * escaped preview.
 */
Deno.test("2_1: --trace prints accepted, spawned, started (and how fast), read, replied, reaped", async () => {
  await using server = await startRecipe(FILE, {
    ...SERVE,
    args: ["--serve", "--trace"],
  });
  const data = encoder.encode(
    'say "hi"\x01\u00e9 and then a long tail of more text',
  );
  const pid = await exchange(server.port, data);
  await server.waitFor(`Handler PID ${pid} exited with code 0`);
  server.kill("SIGTERM");
  assertEquals((await server.exit()).code, 0);
  const trace = server.stderr.split("\n").filter((l) =>
    l.startsWith("trace: ")
  );
  const client = "127\\.0\\.0\\.1:\\d+";
  const expected = [
    `accepted ${client}`,
    `spawned handler PID ${pid} for ${client}`,
    `handler PID ${pid} started, \\d+\\.\\d ms after its spawn`,
    `handler PID ${pid} read 45 bytes: "say \\\\x22hi\\\\x22\\\\x01é and then a long tail\\.\\.\\."`,
    `handler PID ${pid} replied ${
      45 + `${pid}: `.length
    } bytes: "${pid}: say .*\\.\\.\\."`,
    `reaped handler PID ${pid} \\(code 0\\), \\d+\\.\\d ms after its spawn`,
  ];
  assertEquals(trace.length, expected.length, server.stderr);
  trace.forEach((line, i) =>
    assertMatch(line, new RegExp(`^trace: ${expected[i]}$`))
  );
  // No line shows more than 32 bytes of what the client sent.
  for (const line of trace) assert(!line.includes("more text"), line);
});
