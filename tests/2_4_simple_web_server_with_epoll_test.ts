import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import {
  ALLOW_NET,
  assertArgparse,
  assertPortInUse,
  DENO,
  have,
  HEADLESS_CHROMIUM,
  run,
  servedAfterResets,
  startRecipe,
  startTask,
  TestClient,
  withDeadline,
  withStderrJoined,
} from "./harness.ts";

const FILE = "2_4_simple_web_server_with_epoll.ts";
const decoder = new TextDecoder();
const DASHES = "-".repeat(40);
/** The book's response bytes, plus `Connection: close` (see the header). */
const RESPONSE = "HTTP/1.1 200 OK\r\n" +
  "Date: Mon, 1 Apr 2013 01:01:01 GMT\r\n" +
  "Content-Type: text/plain\r\n" +
  "Content-Length: 25\r\n" +
  "Connection: close\r\n" +
  "\r\n" +
  "\nHello from Epoll Server!";
const TOO_LARGE = "HTTP/1.1 431 Request Header Fields Too Large\r\n" +
  "Content-Length: 0\r\nConnection: close\r\n\r\n";
const MAX_HEAD = 8 * 1024;

/** Sends `head` on a fresh connection; returns all it gets until the close. */
async function request(port: number, head: string): Promise<string> {
  await using client = await TestClient.connect(port);
  await client.write(head);
  return decoder.decode(await client.readUntilClose());
}

/** A request head of exactly `size` bytes, "\r\n\r\n" included. */
function headOfSize(size: number): string {
  const start = "GET / HTTP/1.1\r\nX-Padding: ";
  return start + "a".repeat(size - start.length - 4) + "\r\n\r\n";
}

/** The reply is the book's bytes exactly (plus `Connection: close`), and the server prints a dashed line and then the request head without its last CRLF, as the book's listing shows. */
Deno.test("2_4: exact response bytes; the head printed as in the book's listing", async () => {
  await using server = await startRecipe(FILE);
  assertMatch(
    server.stdout,
    /^Started Epoll Server\nListening on http:\/\/localhost:\d+\/\n/,
  );
  const head = `GET / HTTP/1.1\r\nHost: localhost:${server.port}\r\n` +
    "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
  assertEquals(await request(server.port, head), RESPONSE);
  // The book prints the request minus its last two bytes, then a newline.
  await server.waitFor(`${DASHES}\n${head.slice(0, -2)}\n`);
});

/** An ordinary HTTP client (fetch) reads the status 200, the Content-Type and Date headers and the body; the server prints the request line. */
Deno.test("2_4: fetch() sees the status, the headers and the body", async () => {
  await using server = await startRecipe(FILE);
  const response = await fetch(`http://127.0.0.1:${server.port}/hello`);
  assertEquals(response.status, 200);
  assertEquals(response.headers.get("content-type"), "text/plain");
  assertEquals(response.headers.get("date"), "Mon, 1 Apr 2013 01:01:01 GMT");
  assertEquals(await response.text(), "\nHello from Epoll Server!");
  await server.waitFor(`${DASHES}\nGET /hello HTTP/1.1\r\n`);
});

/** A head sent one byte per write is still read whole, and a blank line ends it whether written LF LF or CRLF CRLF. */
Deno.test("2_4: a request sent one byte at a time, ending in \\n\\n or \\r\\n\\r\\n", async () => {
  await using server = await startRecipe(FILE);
  for (const head of ["GET /lf HTTP/1.0\nX: y\n\n", headOfSize(300)]) {
    await using client = await TestClient.connect(server.port);
    client.conn.setNoDelay(true); // one segment per byte, where it can
    for (const byte of new TextEncoder().encode(head)) {
      await client.write(new Uint8Array([byte]));
    }
    assertEquals(decoder.decode(await client.readUntilClose()), RESPONSE);
    await server.waitFor(`${DASHES}\n${head.slice(0, -2)}\n`);
  }
});

/** Bytes that are neither HTTP nor UTF-8 still get the normal reply once a blank line ends them; the printout shows invalid UTF-8 as U+FFFD and ESC and NUL escaped, so nothing reaches the terminal raw. */
Deno.test("2_4: binary garbage is answered and printed safely", async () => {
  await using server = await startRecipe(FILE);
  // One byte per character: invalid UTF-8, ESC (a terminal escape), NUL.
  const garbage = Uint8Array.from(
    "\xff\xfe\x1b[2J\x00\xc3(\n\n",
    (c) => c.charCodeAt(0),
  );
  await using client = await TestClient.connect(server.port);
  await client.write(garbage);
  assertEquals(decoder.decode(await client.readUntilClose()), RESPONSE);
  // Invalid UTF-8 becomes U+FFFD; ESC and NUL are shown escaped, not sent raw.
  await server.waitFor(`${DASHES}\n\ufffd\ufffd\\x1b[2J\\x00\ufffd(\n`);
});

/** A client that sends part of a head and then waits (slowloris) is closed once --header-timeout has passed, not before, and others are served meanwhile. */
Deno.test("2_4: slowloris: no complete head within --header-timeout is closed", async () => {
  await using server = await startRecipe(FILE, {
    args: ["--header-timeout=1"],
  });
  const started = performance.now();
  await using slow = await TestClient.connect(server.port);
  await slow.write("GET / HTTP/1.1\r\nHost: slow\r\n");
  // Others are served while the slow client waits.
  assertEquals(await request(server.port, "GET / HTTP/1.0\r\n\r\n"), RESPONSE);
  assert(await slow.closedByPeer(5_000), "the slow client is closed");
  const elapsed = performance.now() - started;
  assert(elapsed >= 950, `closed after ${elapsed} ms, before the 1 s limit`);
  await server.waitFor(/connection \d+: closed \(no complete head in time\)\n/);
});

/** A head of exactly 8 KiB is served and one byte more gets a 431; even a client still sending 8 MiB reads that 431 and a clean close, and the next request is served. */
Deno.test("2_4: a head over 8 KiB gets a 431 and a clean close; 8 KiB is served", async () => {
  await using server = await startRecipe(FILE);
  assertEquals(await request(server.port, headOfSize(MAX_HEAD)), RESPONSE);
  assertEquals(await request(server.port, headOfSize(MAX_HEAD + 1)), TOO_LARGE);
  await server.waitFor(/connection \d+: request head too large, sent 431\n/);
  // A client still sending (8 MiB, more than the socket buffers hold) can
  // finish: the server reads on until the client's EOF, then closes cleanly.
  await using flooder = await TestClient.connect(server.port);
  await flooder.write("GET / HTTP/1.1\r\nX: " + "b".repeat(8 * 1024 * 1024));
  await flooder.closeWrite();
  assertEquals(decoder.decode(await flooder.readUntilClose()), TOO_LARGE);
  assertEquals(await request(server.port, "GET / HTTP/1.0\r\n\r\n"), RESPONSE);
});

/** A client that got its 431 and goes on sending is closed at the deadline, and the log says so (not "no complete head"). */
Deno.test("2_4: after a 431, a client still sending at the deadline is closed and logged as such", async () => {
  await using server = await startRecipe(FILE, {
    args: ["--header-timeout=1"],
  });
  await using client = await TestClient.connect(server.port);
  await client.write(headOfSize(MAX_HEAD + 100).slice(0, -4)); // no end yet
  await server.waitFor(/connection \d+: request head too large, sent 431\n/);
  // Keep sending, never closing, until the server's deadline closes us: our
  // writes then fail (the server reset the connection it closed unread).
  const sending = (async () => {
    const more = "x".repeat(1024);
    while (true) {
      try {
        await client.write(more);
      } catch {
        return;
      }
    }
  })();
  await withDeadline(sending, 5_000, "the server's close at the deadline");
  await server.waitFor(
    /connection \d+: closed \(431 sent, the client still sending at the deadline\)\n/,
  );
});

/** A client that half-closes mid-request, or resets its connection, is closed and logged on its own; the server goes on serving others. */
Deno.test("2_4: a half-close or a reset mid-request closes only that client", async () => {
  await using server = await startRecipe(FILE);
  {
    await using quitter = await TestClient.connect(server.port);
    await quitter.write("GET / HT");
    await quitter.closeWrite(); // the book's loop spun here forever
    assert(await quitter.closedByPeer(), "the half-closed client is closed");
    await server.waitFor(/connection \d+: closed by the client mid-request\n/);
  }
  {
    // A real reset: a process that exits with the server's 431 unread in its
    // socket makes the kernel send RST (Deno's close() would send a FIN first).
    const rude = await run(DENO, ["run", "--allow-net=127.0.0.1", "-"], {
      input: `const c = await Deno.connect({ port: ${server.port} });
        await c.write(new TextEncoder().encode("GET /" + "c".repeat(9000)));
        await c.read(new Uint8Array(1));
        Deno.exit(0);`,
    });
    assertEquals(rude.code, 0, rude.stderr);
    await server.waitFor(/connection \d+: closed \(ConnectionReset: .*\)\n/);
  }
  assertEquals(await request(server.port, "GET / HTTP/1.0\r\n\r\n"), RESPONSE);
});

/** 1,000 idle connections, silent or holding part of a head, keep no one waiting: 100 other requests are served, and each idle one is answered once it ends its head. */
Deno.test("2_4: 1,000 idle connections held open; 100 active requests served", async () => {
  await using server = await startRecipe(FILE, {
    args: ["--header-timeout=120"],
  });
  const idle: TestClient[] = [];
  try {
    await withDeadline(
      (async () => {
        for (let batch = 0; batch < 10; batch++) {
          const opened = await Promise.allSettled(
            Array.from({ length: 100 }, () => TestClient.connect(server.port)),
          );
          for (const r of opened) {
            if (r.status === "fulfilled") idle.push(r.value);
          }
          const failed = opened.find((r) => r.status === "rejected");
          if (failed) {
            throw new Error(
              `${failed.reason} after ${idle.length} connections ` +
                "(this test needs a hard `ulimit -n` of 1,200 or more)",
            );
          }
        }
        // Half send nothing, half the start of a request; then all wait.
        await Promise.all(
          idle.map((c, i) => i % 2 ? c.write("GET /idle HTTP/1.1\r\n") : null),
        );
      })(),
      30_000,
      "opening 1,000 idle connections",
    );
    const active = Array.from(
      { length: 100 },
      (_, i) => request(server.port, `GET /active/${i} HTTP/1.1\r\n\r\n`),
    );
    for (const reply of await Promise.all(active)) {
      assertEquals(reply, RESPONSE);
    }
    // Every idle connection was kept, with its partial request: finish them.
    const finished = idle.map(async (c, i) => {
      await c.write(i % 2 ? "\r\n" : "GET /late HTTP/1.1\r\n\r\n");
      return decoder.decode(await c.readUntilClose(30_000));
    });
    for (const reply of await Promise.all(finished)) {
      assertEquals(reply, RESPONSE);
    }
  } finally {
    for (const client of idle) client.close();
  }
});

/** A reset in the accept queue is logged and skipped: no pause deafens the server. */
Deno.test({
  name:
    "2_4: 100 clients reset while queued; the next client is served at once",
  ignore: !have("python3"),
  async fn() {
    await using server = await startRecipe(FILE);
    const answer = await servedAfterResets(
      server.port,
      () => request(server.port, "GET / HTTP/1.0\r\n\r\n"),
    );
    assertEquals(answer, RESPONSE);
    await server.waitFor(/accept failed: .*\n/);
  },
});
if (!have("python3")) {
  console.warn(
    "skipping the accept-queue reset test: python3 is not installed",
  );
}

/** SIGINT or SIGTERM: the server prints its shutdown line, closes each open connection (logged as closed by server shutdown), and exits 0. */
Deno.test("2_4: SIGINT and SIGTERM close every connection and exit 0", async () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await using server = await startRecipe(FILE);
    await using client = await TestClient.connect(server.port);
    await client.write("GET / HTTP/1.1\r\n");
    assertEquals(
      await request(server.port, "GET / HTTP/1.0\r\n\r\n"),
      RESPONSE,
    );
    server.kill(signal);
    assertEquals((await server.exit()).code, 0);
    // The line for the open connection says shutdown, not an error name.
    assertMatch(
      server.stdout,
      /\nShutting down epoll server\.\.\.\nconnection \d+: closed by server shutdown\n$/,
    );
    assert(await client.closedByPeer(), `the client is closed on ${signal}`);
  }
});

/** Ctrl-C under `deno task` (SIGINT to the whole group): one shutdown, exit 0. */
Deno.test("2_4: Ctrl-C to `deno task 2_4`'s process group, 20 times over", async () => {
  for (let round = 0; round < 20; round++) {
    await using task = await startTask("2_4");
    await using client = await TestClient.connect(task.port);
    await client.write("GET / HTTP/1.1\r\n");
    task.killGroup("SIGINT");
    const { code } = await task.exit();
    assertEquals(code, 0, `round ${round}: exit code\n${task.transcript}`);
    assertEquals(
      task.stdout.match(/Shutting down/g)?.length,
      1,
      `round ${round}: one shutdown line\n${task.transcript}`,
    );
    assertEquals(task.stderr, "", `round ${round}: nothing on stderr`);
    assert(await client.closedByPeer(), `round ${round}: the client is closed`);
  }
});

/** argparse's contract: --help exits 0; a missing or bad --port, a --header-timeout of 0 or not a number, or an unknown option exits 2 with the usage and one error line. */
Deno.test("2_4: --help exits 0; bad arguments exit 2 with argparse's usage", () =>
  assertArgparse(FILE, /^usage: .* --port PORT .*--header-timeout/, [
    [[], /required: --port$/],
    [["--port=abc"], /argument --port: invalid .*'abc'$/],
    [["--port=70000"], /argument --port: invalid .*'70000'$/],
    [["--port=0", "--header-timeout=0"], /--header-timeout/],
    [["--port=0", "--header-timeout=soon"], /--header-timeout/],
    [["--port=0", "--verbose"], /unrecognized arguments: --verbose$/],
  ]));

/** A second server on a port already in use prints one error line on stderr and exits 1. */
Deno.test("2_4: a port already in use is a one-line error and exit 1", async () => {
  await using server = await startRecipe(FILE);
  await assertPortInUse(FILE, [`--port=${server.port}`]);
});

/** `--host` without the permission for it: one line naming the command that works. */
Deno.test("2_4: --host the task may not listen on is a one-line error, exit 1", async () => {
  for (const host of ["0.0.0.0", "::"]) {
    const result = await run(DENO, [
      "task",
      "--quiet",
      "2_4",
      `--host=${host}`,
      "--port=8800",
    ]);
    assertEquals(result.code, 1, result.stderr);
    const allow = host.includes(":") ? `[${host}]` : host;
    assertEquals(
      result.stderr,
      `Error: --host=${host} needs network permission for it: deno run ` +
        `--allow-net=${allow} ${FILE} --host=${host} --port=8800\n`,
    );
  }
});

/** `--host=::1` works as `deno task 2_4` runs it: fetch and curl -6 reach [::1]. */
Deno.test("2_4: --host=::1 serves IPv6 clients", async () => {
  await using task = await startTask("2_4", { args: ["--host=::1"] });
  assertMatch(task.stdout, /Listening on http:\/\/\[::1\]:\d+\/\n/);
  const url = `http://[::1]:${task.port}/`;
  const response = await fetch(url);
  assertEquals(await response.text(), "\nHello from Epoll Server!");
  await task.waitFor(
    new RegExp(
      `GET / HTTP/1\\.1\\r\\n[^]*?host: \\[::1\\]:${task.port}\\r\\n`,
      "i",
    ),
  );
  if (have("curl")) {
    const curl = await run("curl", ["-6", "-sS", "--max-time", "10", url]);
    assertEquals(curl.code, 0, curl.stderr);
    assertEquals(curl.stdout, "\nHello from Epoll Server!");
  }
  // The book's IPv4-only `localhost` is not served on this address.
  await assertRejects(() => TestClient.connect(task.port));
  task.killGroup("SIGINT");
  assertEquals((await task.exit()).code, 0);
});

/** `--trace` shows each connection's EPOLLIN, EPOLLOUT and EPOLLHUP on stderr. */
Deno.test("2_4: --trace prints the loop's steps, client data escaped and cut", async () => {
  await using server = await startRecipe(FILE, { args: ["--trace"] });
  await using slow = await TestClient.connect(server.port);
  slow.conn.setNoDelay(true);
  await slow.write("GET /two/parts HTTP/1.0\r\n");
  // A whole request on a second connection, answered and printed: the
  // server has read the first part by now (it arrived before this connect).
  assertEquals(
    await request(server.port, "GET /other/and/a/longer/path HTTP/1.0\r\n\r\n"),
    RESPONSE,
  );
  await server.waitFor(`${DASHES}\nGET /other/and/a/longer/path HTTP/1.0\r\n`);
  await slow.write("X: \x1b\u00e9\r\n\r\n");
  assertEquals(decoder.decode(await slow.readUntilClose()), RESPONSE);
  server.kill("SIGINT");
  assertEquals((await server.exit()).code, 0);
  const lines = server.stderr.trimEnd().split("\n");
  const slowLines = lines.filter((line) =>
    line.startsWith("trace: connection 1:")
  );
  assertEquals(slowLines, [
    'trace: connection 1: EPOLLIN, read 25 bytes "GET /two/parts HTTP/1.0\\x0d\\x0a", head not complete (25 bytes so far)',
    'trace: connection 1: EPOLLIN, read 10 bytes "X: \\x1bé\\x0d\\x0a\\x0d\\x0a", head complete',
    `trace: connection 1: EPOLLOUT, sent ${RESPONSE.length} bytes, all sent`,
    "trace: connection 1: EPOLLHUP, closed",
  ]);
  assertMatch(
    lines[0],
    /^trace: listening socket: accepted connection 1 from 127\.0\.0\.1:\d+, registered for EPOLLIN$/,
  );
  // A long read is cut to 32 bytes, then "...".
  assert(
    lines.includes(
      'trace: connection 2: EPOLLIN, read 41 bytes "GET /other/and/a/longer/path HTT...", head complete',
    ),
    server.stderr,
  );
  // Every line is a trace line: nothing but the trace goes to stderr.
  for (const line of lines) assertMatch(line, /^trace: /);
});

/** Without `--trace`, nothing is traced. */
Deno.test("2_4: without --trace, stderr stays empty", async () => {
  await using server = await startRecipe(FILE);
  assertEquals(await request(server.port, "GET / HTTP/1.0\r\n\r\n"), RESPONSE);
  server.kill("SIGINT");
  assertEquals((await server.exit()).code, 0);
  assertEquals(server.stderr, "");
});

/** curl, a real HTTP client, gets the body, and the server prints curl's request with its User-Agent. */
Deno.test({
  name: "2_4: a real curl gets the body",
  ignore: !have("curl"),
  async fn() {
    await using server = await startRecipe(FILE);
    const url = `http://localhost:${server.port}/`;
    const curl = await run("curl", ["-sS", "--max-time", "10", url]);
    assertEquals(curl.code, 0, curl.stderr);
    assertEquals(curl.stdout, "\nHello from Epoll Server!");
    await server.waitFor(/\nGET \/ HTTP\/1\.1\r\n[^]*?User-Agent: curl\//);
  },
});
if (!have("curl")) {
  console.warn("skipping the curl test: curl is not installed");
}

/** A real browser (headless Chromium) shows the body as a page, and the server prints the browser's GET / head. */
Deno.test({
  name: "2_4: headless Chromium shows the page; the server prints its GET /",
  ignore: !have("chromium"),
  async fn() {
    await using server = await startRecipe(FILE);
    const profile = await Deno.makeTempDir({ prefix: "2_4_chromium_" });
    try {
      const chromium = await run("chromium", [
        ...HEADLESS_CHROMIUM,
        `--user-data-dir=${profile}`,
        "--dump-dom",
        `http://localhost:${server.port}/`,
      ], { ms: 60_000 });
      assertMatch(
        chromium.stdout,
        /<pre[^>]*>\nHello from Epoll Server!<\/pre>/,
        `chromium exited ${chromium.code}: ${chromium.stderr}`,
      );
      await server.waitFor(
        /-{40}\nGET \/ HTTP\/1\.1\r\nHost: localhost:\d+\r\n[^]*?User-Agent: [^\r\n]*HeadlessChrome\/[^]*?\r\n\n/,
      );
    } finally {
      await Deno.remove(profile, { recursive: true });
    }
  },
});
if (!have("chromium")) {
  console.warn("skipping the Chromium test: chromium is not installed");
}

/** As on a terminal (stdout and stderr one stream): the head prints in the EPOLLIN branch, before that connection's EPOLLOUT and EPOLLHUP lines, as in the book; counts of one say "1 byte". */
Deno.test({
  name: "2_4: --trace on a terminal: each head before its EPOLLOUT line",
  ignore: !have("python3"),
  async fn() {
    await using server = withStderrJoined(FILE, [
      DENO,
      "run",
      "--quiet",
      ALLOW_NET,
      FILE,
      "--trace",
      "--port=0",
    ]);
    const port = Number((await server.waitFor(/Listening on \S+:(\d+)/))[1]);
    await using client = await TestClient.connect(port);
    await client.write("G");
    await server.waitFor(
      'connection 1: EPOLLIN, read 1 byte "G", head not complete (1 byte so far)\n',
    );
    await client.write("ET /order HTTP/1.0\r\n\r\n");
    assertEquals(decoder.decode(await client.readUntilClose()), RESPONSE);
    await server.waitFor("trace: connection 1: EPOLLHUP, closed\n");
    server.kill("SIGINT");
    assertEquals((await server.exit()).code, 0);
    const steps = server.stdout.split("\n").filter((line) =>
      /^(trace: connection 1:|-{40}$|GET \/order)/.test(line)
    );
    assertEquals(steps, [
      'trace: connection 1: EPOLLIN, read 1 byte "G", head not complete (1 byte so far)',
      'trace: connection 1: EPOLLIN, read 22 bytes "ET /order HTTP/1.0\\x0d\\x0a\\x0d\\x0a", head complete',
      DASHES,
      "GET /order HTTP/1.0\r",
      `trace: connection 1: EPOLLOUT, sent ${RESPONSE.length} bytes, all sent`,
      "trace: connection 1: EPOLLHUP, closed",
    ]);
  },
});

/** A connection that ends without sending a byte (a browser's spare connection, `nc -z`) is logged as such, not as "mid-request". */
Deno.test("2_4: a client that sends nothing is logged as sending no request", async () => {
  await using server = await startRecipe(FILE);
  const silent = await TestClient.connect(server.port);
  silent.close();
  await server.waitFor(/connection 1: closed by the client, no request sent\n/);
  await using quitter = await TestClient.connect(server.port);
  await quitter.write("GET / HT");
  await quitter.closeWrite();
  await server.waitFor(/connection 2: closed by the client mid-request\n/);
});

/** `deno run` without --allow-net and with --no-prompt: the error names the default host and the whole command that works, and that command does work. */
Deno.test("2_4: no network permission for the default host names the command that works", async () => {
  const result = await run(DENO, ["run", "--no-prompt", FILE, "--port=0"]);
  assertEquals(result.code, 1, result.stderr);
  assertEquals(
    result.stderr,
    "Error: listening on localhost needs network permission: deno run " +
      `--allow-net=localhost ${FILE} --port=0 (or: deno task 2_4 --port=0)\n`,
  );
  await using server = await startRecipe(FILE, {
    permissions: ["--allow-net=localhost"],
  });
  assertEquals(await request(server.port, "GET / HTTP/1.0\r\n\r\n"), RESPONSE);
});

/** Over IPv6, the trace writes the client's address as [::1]:port. */
Deno.test("2_4: --trace writes an IPv6 client's address in brackets", async () => {
  await using task = await startTask("2_4", {
    args: ["--host=::1", "--trace"],
  });
  const response = await fetch(`http://[::1]:${task.port}/`);
  assertEquals(await response.text(), "\nHello from Epoll Server!");
  await task.waitFor(/GET \/ HTTP\/1\.1\r\n/);
  task.killGroup("SIGINT");
  assertEquals((await task.exit()).code, 0);
  assertMatch(
    task.stderr,
    /^trace: listening socket: accepted connection 1 from \[::1\]:\d+, registered for EPOLLIN$/m,
  );
});
