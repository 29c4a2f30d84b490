import { assert, assertEquals, assertMatch } from "@std/assert";
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
} from "../2_2_threading_mixin_socket_server.ts";

const FILE = "2_2_threading_mixin_socket_server.ts";
// What `deno task 2_2` grants: each Worker loads this file, so it reads it.
const PERMISSIONS = ["--allow-net=localhost,127.0.0.1", `--allow-read=${FILE}`];
// The ready lines the benchmark relies on, exactly; group 1 is the port.
const READY =
  /^Server loop running on thread: MainThread\nListening on 127\.0\.0\.1:(\d+)\n/;
const SERVE = { args: ["--serve"], permissions: PERMISSIONS, ready: READY };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Sends `data` in one write; checks the whole reply; returns the thread. */
async function exchange(port: number, data: Uint8Array, halfClose = false) {
  await using client = await TestClient.connect(port);
  await client.write(data);
  if (halfClose) await client.closeWrite();
  const answer = await client.readUntilClose(20_000);
  const thread = decoder.decode(answer).match(/^(Thread-\d+): /)?.[1];
  const prefix = encoder.encode(`${thread}: `);
  const expected = new Uint8Array(prefix.length + Math.min(data.length, 1024));
  expected.set(prefix);
  expected.set(data.subarray(0, 1024), prefix.length);
  assertEquals(answer, expected);
  return thread!;
}

/**
 * The book's demo: a server on MainThread, three clients, each reply from a new
 * thread named Thread-N, and nothing on stderr.
 */
Deno.test("2_2: the book's demo prints its lines, each reply from a new thread", async () => {
  const demo = await run(DENO, ["run", "--quiet", ...PERMISSIONS, FILE]);
  assertEquals(demo.code, 0, demo.stderr);
  const [, ...threads] = demo.stdout.match(
    new RegExp(
      "^Server loop running on thread: MainThread\n" +
        [1, 2, 3].map((i) =>
          `Client received: (Thread-\\d+): Hello from client ${i}\n`
        ).join("") + "$",
    ),
  ) ?? [];
  assertEquals(threads.length, 3, `unexpected demo output:\n${demo.stdout}`);
  assertEquals(new Set(threads).size, 3, `thread names: ${threads}`);
  assertEquals(demo.stderr, "");
});

/**
 * Threading under load: 20 clients at once get 20 whole 1 KiB echoes from 20
 * different threads.
 */
Deno.test("2_2: 20 concurrent 1 KiB requests, each answered by its own thread", async () => {
  await using server = await startRecipe(FILE, SERVE);
  const threads = await Promise.all(Array.from({ length: 20 }, (_, i) => {
    const data = encoder.encode(`client ${i} `.padEnd(1024, String(i % 10)));
    return exchange(server.port, data);
  }));
  assertEquals(new Set(threads).size, 20, `thread names: ${threads}`);
});

/**
 * A handler reads once, at most 1024 bytes, and echoes those bytes as read; a
 * UTF-8 character cut by that limit does not throw.
 */
Deno.test("2_2: one read of at most 1024 bytes; a character cut in two does not throw", async () => {
  await using server = await startRecipe(FILE, SERVE);
  // 1023 ASCII bytes then "é" (2 bytes): the read ends inside the "é".
  const data = encoder.encode("a".repeat(1023) + "é and more");
  const thread = await exchange(server.port, data);
  await server.waitFor(
    `${thread} replied with ${thread.length + 2 + 1024} bytes`,
  );
  server.kill("SIGTERM");
  await server.exit();
  assert(!server.stderr.includes("trace:"), "no trace without --trace");
});

/**
 * A client that shuts down its sending side right after its data still gets its
 * whole reply.
 */
Deno.test("2_2: a client that half-closes right after sending still gets its reply", async () => {
  await using server = await startRecipe(FILE, SERVE);
  await exchange(server.port, encoder.encode("then EOF"), true);
});

/**
 * A client that connects and closes without sending is logged, its thread ends,
 * and the next client is served by Thread-2.
 */
Deno.test("2_2: a client that leaves without sending is logged; the server goes on", async () => {
  await using server = await startRecipe(FILE, SERVE);
  {
    await using _silent = await TestClient.connect(server.port);
    await server.waitFor(/Thread-1 started for 127\.0\.0\.1:\d+ \(1 of 40/);
  }
  await server.waitFor(/Thread-1 client left without sending; terminated/);
  assertEquals(await exchange(server.port, encoder.encode("next")), "Thread-2");
});

/**
 * With --timeout=1 a thread whose client sends nothing is terminated after one
 * second, its client told why in one line and disconnected, and the next
 * client served.
 */
Deno.test("2_2: a client that never sends is told, then cut off at --timeout", async () => {
  await using server = await startRecipe(FILE, {
    ...SERVE,
    args: ["--serve", "--timeout=1"],
  });
  await using silent = await TestClient.connect(server.port);
  await server.waitFor(/Thread-1 timed out after 1 s; terminated \(0 of 40/);
  assertEquals(
    decoder.decode(await silent.readUntilClose()),
    "Timed out after 1 s: closing the connection.\r\n",
  );
  await exchange(server.port, encoder.encode("after the timeout"));
});

/**
 * At most 40 Workers run at once; the other connections wait their turn, every
 * client is answered, and the logged running count is right at every step.
 */
Deno.test("2_2: 100 concurrent connections never hold more than 40 Workers", async () => {
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
      assertMatch(answer, new RegExp(`^Thread-\\d+: client ${i}$`));
    }));
  } finally {
    for (const client of clients) client.close();
  }
  for (let i = 0; i < 100; i++) {
    await server.waitFor(/Thread-\d+ replied with \d+ bytes; terminated/);
  }
  // Replay the server's own start/end log: its count is right at every
  // step, and it never passes 40.
  let running = 0, peak = 0, started = 0;
  for (
    const [, event, count] of server.stdout.matchAll(
      /Thread-\d+ (started|replied).*\((\d+) of 40 running\)/g,
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
 * Either signal makes the server terminate every Worker, close every client
 * with a shutdown line (not a failure), and exit 0.
 */
Deno.test("2_2: SIGTERM and SIGINT terminate every Worker, close every client, exit 0", async () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    await using server = await startRecipe(FILE, SERVE);
    const clients = await Promise.all(
      Array.from({ length: 3 }, () => TestClient.connect(server.port)),
    );
    await server.waitFor(/\(3 of 40 running\)\n/);
    server.kill(signal);
    assertEquals((await server.exit()).code, 0, server.transcript);
    assertMatch(server.stdout, /Shutting down: terminating 3 threads\.\.\.\n/);
    // The lines at shutdown say shutdown, not a failure.
    const stopped = server.stdout.match(
      /Thread-\d closed by server shutdown; terminated/g,
    );
    assertEquals(stopped?.length, 3, server.stdout);
    assert(!/failed|not delivered/.test(server.stdout), server.stdout);
    assertMatch(server.stdout, /Peak: 3 of 40; 0 left running\n$/);
    for (const client of clients) {
      assert(await client.closedByPeer(), `a client is closed on ${signal}`);
      client.close();
    }
  }
});

/** A client that sends its line and resets before the reply ends only its own connection: the server is still there for the next. */
Deno.test({
  name: "2_2: a client that resets before its reply does not end the server",
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
  name: "2_2: 100 connections reset while queued do not delay the next client",
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
Deno.test("2_2: Ctrl-C under `deno task 2_2 --serve`: one shutdown line, exit 0, every time", async () => {
  await assertCtrlCUnderTask("2_2", {
    args: ["--serve"],
    ready: READY,
    rounds: 20,
    shutdown: /Shutting down/,
    check: (task) =>
      assertMatch(task.stdout, /\nPeak: 0 of 40; 0 left running\n$/),
  });
});

/**
 * Without a permission it needs (none, no --allow-read of itself, or no
 * --allow-net), the server prompts for nothing: one error gives the whole
 * command that works, with the full path (so it works from any folder) and
 * the arguments it was given, and `deno task 2_2`; exit 1.
 */
Deno.test("2_2: a missing permission is one error with the whole command that works", async () => {
  const path = new URL(`../${FILE}`, import.meta.url).pathname;
  const needed = `--allow-net=localhost,127.0.0.1 --allow-read=${path}`;
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
      `Error: the server needs ${needed} (its handler Workers load this ` +
        `file); run it as\n  deno run ${needed} ${path} --serve --port=0\n` +
        `or, in the recipe's folder,\n  deno task 2_2 --serve --port=0\n`,
      `given ${given.join(" ") || "no permission"}`,
    );
  }
});

/**
 * A count in a printed line is in good English: one thread, not "1
 * threads", at shutdown, and "1 byte" in a trace.
 */
Deno.test("2_2: one thread at shutdown is 'terminating 1 thread'", async () => {
  await using server = await startRecipe(FILE, SERVE);
  await using client = await TestClient.connect(server.port);
  await server.waitFor(/\(1 of 40 running\)\n/);
  server.kill("SIGTERM");
  assertEquals((await server.exit()).code, 0, server.transcript);
  assertMatch(
    server.stdout,
    /\nShutting down: terminating 1 thread\.\.\.\n/,
  );
  assert(await client.closedByPeer());
});

/** Counts in good English (the harness's pluralCases). */
Deno.test("2_2: plural() counts in good English", () => {
  for (const [count, noun, text] of pluralCases()) {
    assertEquals(plural(count, noun), text);
  }
});

/** An IPv6 address is printed in brackets beside its port, as in a URL (the harness's addressCases). */
Deno.test("2_2: address() brackets IPv6 and leaves IPv4 as the book prints it", () => {
  for (const [hostname, text] of addressCases()) {
    assertEquals(address({ transport: "tcp", hostname, port: 8800 }), text);
  }
});

/** A trace preview shows printable UTF-8 as text and escapes the rest (the harness's previewCases). */
Deno.test("2_2: preview() shows printable UTF-8 as text and escapes the rest", () => {
  for (const [data, shown] of previewCases()) {
    assertEquals(preview(data), shown);
  }
});

/**
 * The command line behaves as Python's argparse: --help exits 0; a bad port,
 * timeout or flag prints the usage and one error line and exits 2.
 */
Deno.test("2_2: --help exits 0; bad arguments exit 2 with argparse's usage", () =>
  assertArgparse(FILE, /^usage: .*\[--serve\] \[--port PORT\]/, [
    [["--port=abc"], /argument --port: invalid .*'abc'$/],
    [["--port=70000"], /argument --port: invalid .*'70000'$/],
    [["--timeout=x"], /--timeout/],
    [["-x"], /unrecognized arguments: -x$/],
  ]));

/**
 * A second server on a port already in use prints one error line and exits 1.
 */
Deno.test("2_2: a port already in use is a one-line error and exit 1", async () => {
  await using server = await startRecipe(FILE, SERVE);
  await assertPortInUse(
    FILE,
    ["--serve", `--port=${server.port}`],
    PERMISSIONS,
  );
});

/**
 * A real netcat client, sending a line and closing its side, gets `Thread-1: `
 * and its line back.
 */
Deno.test({
  name: "2_2: a real nc client gets its reply",
  ignore: !have("nc"),
  async fn() {
    await using server = await startRecipe(FILE, SERVE);
    const nc = await run("nc", ["-N", "127.0.0.1", String(server.port)], {
      input: "hello from netcat\n",
    });
    assertEquals(nc.stdout, "Thread-1: hello from netcat\n");
  },
});
if (!have("nc")) console.warn("skipping the nc test: nc is not installed");

/**
 * The book's own client() function, loaded by path from the reader's copy
 * (the module name starts with a digit, so `import` cannot name it), called
 * as the book's __main__ calls it: three clients in turn.
 */
const BOOK_CLIENTS = `
import importlib.util, sys
spec = importlib.util.spec_from_file_location("book_2_2", sys.argv[1])
book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book)
port = int(sys.argv[2])
book.client("127.0.0.1", port, "Hello from client 1")
book.client("127.0.0.1", port, "Hello from client 2")
book.client("127.0.0.1", port, "Hello from client 3")
`;
const book = bookScript("2_2_threading_mixin_socket_server.py");

/** The book's client() speaks to our server and gets each thread's reply. */
Deno.test({
  name: "2_2: the book's client() gets the right replies from --serve",
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
    // The book prints the repr of the reply's bytes.
    assertEquals(
      python.stdout,
      "Client received: b'Thread-1: Hello from client 1'\n" +
        "Client received: b'Thread-2: Hello from client 2'\n" +
        "Client received: b'Thread-3: Hello from client 3'\n",
    );
    await server.waitFor(/Thread-3 replied with 29 bytes; terminated/);
  },
});
if (book.skip) console.warn(`skipping the book's client test: ${book.skip}`);

/**
 * --trace shows each connection's steps in ThreadingMixIn's terms, the
 * handler's own steps from its Worker, with client data only as a short
 * escaped preview.
 */
Deno.test("2_2: --trace prints accepted, new Worker, started (and how fast), read, replied, terminated", async () => {
  await using server = await startRecipe(FILE, {
    ...SERVE,
    args: ["--serve", "--trace"],
  });
  const data = encoder.encode(
    'say "hi"\x01\u00e9 and then a long tail of more text',
  );
  const thread = await exchange(server.port, data);
  await server.waitFor(
    `${thread} replied with ${thread.length + 2 + 45} bytes; terminated`,
  );
  server.kill("SIGTERM");
  assertEquals((await server.exit()).code, 0);
  const trace = server.stderr.split("\n").filter((l) =>
    l.startsWith("trace: ")
  );
  const client = "127\\.0\\.0\\.1:\\d+";
  const expected = [
    `accepted ${client}`,
    `new Worker ${thread} for ${client}`,
    `${thread} started, \\d+\\.\\d ms after new Worker\\(\\)`,
    `${thread} read 45 bytes: "say \\\\x22hi\\\\x22\\\\x01é and then a long tail\\.\\.\\."`,
    `${thread} replied ${
      thread.length + 2 + 45
    } bytes: "${thread}: say .*\\.\\.\\."`,
    `terminated ${thread}, \\d+\\.\\d ms after new Worker\\(\\)`,
  ];
  assertEquals(trace.length, expected.length, server.stderr);
  trace.forEach((line, i) =>
    assertMatch(line, new RegExp(`^trace: ${expected[i]}$`))
  );
  // No line shows more than 32 bytes of what the client sent.
  for (const line of trace) assert(!line.includes("more text"), line);
});
