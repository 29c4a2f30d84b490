import { assert, assertEquals, assertMatch, assertNotMatch } from "@std/assert";
import { concat } from "@std/bytes/concat";
import {
  assertArgparse,
  assertPortInUse,
  DENO,
  have,
  run,
  servedAfterResets,
  startRecipe,
  startTask,
  TestClient,
} from "./harness.ts";

const FILE = "2_5_echo_server_with_diesel.ts";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** As in the book, each line comes back after `You said: ` with its own ending, LF or CRLF, kept; the server logs each client's address. */
Deno.test("2_5: the book's exchange, with LF and CRLF", async () => {
  await using server = await startRecipe(FILE);
  await using client = await TestClient.connect(server.port);
  await server.waitFor(/Echo client connected from: 127\.0\.0\.1:\d+\n/);
  await client.write("Hello Diesel\r\n");
  assertEquals(await client.readLine(), "You said: Hello Diesel\r\n");
  await client.write("from nc\n");
  assertEquals(await client.readLine(), "You said: from nc\n");
});

/** The echo is byte for byte: Korean text and bytes that are not UTF-8 come back unchanged after `You said: `. */
Deno.test("2_5: Korean text and invalid UTF-8 come back byte for byte", async () => {
  await using server = await startRecipe(FILE);
  await using client = await TestClient.connect(server.port);
  await client.write("안녕하세요, 디젤!\n");
  assertEquals(await client.readLine(), "You said: 안녕하세요, 디젤!\n");
  const garbage = new Uint8Array([0xff, 0xfe, 0x80, 0xc3, 0x28, 0x0a]);
  await client.write(garbage);
  assertEquals(
    await client.readLineBytes(),
    concat([encoder.encode("You said: "), garbage]),
  );
});

/** When the client ends its side, a last line with no newline is still echoed; then the server closes and logs the disconnect. */
Deno.test("2_5: a last line without a terminator is answered, then closed", async () => {
  await using server = await startRecipe(FILE);
  await using client = await TestClient.connect(server.port);
  await client.write("one\nlast words");
  await client.closeWrite();
  assertEquals(
    decoder.decode(await client.readUntilClose()),
    "You said: one\nYou said: last words",
  );
  await server.waitFor(/127\.0\.0\.1:\d+ disconnected\n/);
});

/** 1 MiB of lines sent in one write comes back one reply per line, complete and in order, while the client is still writing. */
Deno.test("2_5: 1 MiB of lines in one write comes back complete and in order", async () => {
  await using server = await startRecipe(FILE);
  await using client = await TestClient.connect(server.port);
  const lines: string[] = [];
  for (let i = 0, size = 0; size < 1024 * 1024; i++) {
    lines.push(`line ${i} ${"x".repeat(i % 200)}\n`);
    size += lines[i].length;
  }
  const writing = client.write(lines.join(""));
  for (const line of lines) {
    assertEquals(await client.readLine(), `You said: ${line}`);
  }
  await writing;
});

/** 200 clients talking at once each get all 50 of their replies. */
Deno.test("2_5: 200 concurrent clients with 50 lines each all get their replies", async () => {
  await using server = await startRecipe(FILE);
  const talk = async (id: number) => {
    await using client = await TestClient.connect(server.port);
    for (let n = 0; n < 50; n++) {
      await client.write(`client ${id} line ${n}\n`);
      assertEquals(
        await client.readLine(20_000),
        `You said: client ${id} line ${n}\n`,
      );
    }
  };
  await Promise.all(Array.from({ length: 200 }, (_, id) => talk(id)));
});

/** Clients that said one line and went quiet hold no turn for long (2_5 takes reads in turns, 64 at a time): with 100 of them open, one after another, each is answered, and so is one more. */
Deno.test("2_5: more idle clients than turns do not hold up a new one", async () => {
  await using server = await startRecipe(FILE);
  const idle: TestClient[] = [];
  try {
    for (let id = 0; id < 100; id++) {
      const client = await TestClient.connect(server.port);
      idle.push(client);
      await client.write(`idle ${id}\n`);
      assertEquals(await client.readLine(), `You said: idle ${id}\n`);
    }
    await using late = await TestClient.connect(server.port);
    await late.write("anyone there?\n");
    assertEquals(await late.readLine(), "You said: anyone there?\n");
  } finally {
    for (const client of idle) await client[Symbol.asyncDispose]();
  }
});

/** A client that sends part of a line and then waits is closed once --line-timeout has passed; a client typing whole lines meanwhile is served throughout. */
Deno.test("2_5: a line left unfinished past --line-timeout closes that client only", async () => {
  await using server = await startRecipe(FILE, { args: ["--line-timeout=1"] });
  await using stalled = await TestClient.connect(server.port);
  await stalled.write("half a line, and then noth");
  await using typing = await TestClient.connect(server.port);
  const started = performance.now();
  assert(await stalled.closedByPeer(5_000), "the stalled client is closed");
  const waited = performance.now() - started;
  assert(waited >= 700, `closed after ${waited} ms, before the 1 s limit`);
  await typing.write("still here\n");
  assertEquals(await typing.readLine(), "You said: still here\n");
  await server.waitFor(/ sent no end of line within 1 s, disconnected\n/);
});

/** A line over 65,536 bytes gets an error line and a close, and is logged; another client is still echoed. */
Deno.test("2_5: an oversize line gets an error and a close; another client is unaffected", async () => {
  await using server = await startRecipe(FILE);
  await using bystander = await TestClient.connect(server.port);
  await using flooder = await TestClient.connect(server.port);
  await flooder.write("x".repeat(64 * 1024 + 1) + "\n");
  assertMatch(await flooder.readLine(), /^Error: line longer than 65536 bytes/);
  assert(await flooder.closedByPeer(), "the flooder's connection is closed");
  await server.waitFor(/over 65536 bytes, disconnected\n/);
  await bystander.write("still here?\n");
  assertEquals(await bystander.readLine(), "You said: still here?\n");
});

/** A client still sending 4 MiB with no newline reads the error line and then a clean close, not a reset. */
Deno.test("2_5: a client still flooding gets the error line and a clean close", async () => {
  await using server = await startRecipe(FILE);
  await using flooder = await TestClient.connect(server.port);
  // 4 MiB without a newline, more than the kernel buffers hold: a server
  // that closed with bytes unread would reset the connection, and this
  // write would fail.
  await flooder.write("z".repeat(4 * 1024 * 1024));
  assertMatch(await flooder.readLine(), /^Error: line longer than 65536 bytes/);
  assert(await flooder.closedByPeer(), "then the server closes");
});

/** A line of exactly 65,536 bytes before its CRLF is within the limit and is echoed whole. */
Deno.test("2_5: a line of exactly 64 KiB is still echoed", async () => {
  await using server = await startRecipe(FILE);
  await using client = await TestClient.connect(server.port);
  const line = "y".repeat(64 * 1024) + "\r\n";
  await client.write(line);
  assertEquals(await client.readLine(), `You said: ${line}`);
});

/** A client that resets its connection mid-line ends only its own handler: the next client is echoed as usual. */
Deno.test("2_5: a client reset mid-line ends only its handler", async () => {
  await using server = await startRecipe(FILE);
  {
    await using rude = await TestClient.connect(server.port);
    // The reply to "first" stays unread, so closing sends a reset (RST).
    await rude.write("first\nhalf a li");
    await server.waitFor(/Echo client connected from/);
    await rude.readBytes(1);
  }
  await server.waitFor(/127\.0\.0\.1:\d+ (disconnected|dropped .*)\n/);
  await using next = await TestClient.connect(server.port);
  await next.write("after the reset\n");
  assertEquals(await next.readLine(), "You said: after the reset\n");
});

/** Ctrl-C and SIGTERM: one shutdown line, each client told it was the shutdown (not an error), exit 0. */
Deno.test("2_5: SIGINT and SIGTERM close every connection and exit 0", async () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await using server = await startRecipe(FILE);
    await using idle = await TestClient.connect(server.port);
    await using talking = await TestClient.connect(server.port);
    await talking.write("hello\n");
    assertEquals(await talking.readLine(), "You said: hello\n");
    server.kill(signal);
    assertEquals((await server.exit()).code, 0);
    assertMatch(server.stdout, /Shutting down echo server\.\.\.\n/);
    assert(await idle.closedByPeer(), `the idle client is closed on ${signal}`);
    assert(await talking.closedByPeer(), `the other is closed on ${signal}`);
    assertEquals(
      server.stdout.match(/ closed by server shutdown\n/g)?.length,
      2,
      server.transcript,
    );
    assertNotMatch(server.stdout, /dropped/);
    assertEquals(server.stderr, "", "no trace without --trace");
  }
});

/** `--trace`: one stderr line per line read and reply written, client data escaped and cut at 32 bytes. */
Deno.test("2_5: --trace prints each line read and each reply written", async () => {
  await using server = await startRecipe(FILE, { args: ["--trace"] });
  await using client = await TestClient.connect(server.port);
  const [, who] = await server.waitFor(/connected from: (\S+)\n/);
  await client.write("Hello Diesel\r\n");
  assertEquals(await client.readLine(), "You said: Hello Diesel\r\n");
  // 50 bytes: the trace shows the first 32 (9 here, then 23 z): quotes and
  // backslashes escaped, the "\u00e9" (2 bytes) as text.
  const long = `"q" \\ \u00e9 ${"z".repeat(40)}\n`;
  await client.write(long);
  assertEquals(await client.readLine(), `You said: ${long}`);
  await client.write("\n"); // an empty line is 1 byte, not "1 bytes"
  assertEquals(await client.readLine(), "You said: \n");
  await client.closeWrite();
  assert(await client.closedByPeer());
  await server.waitFor(/disconnected\n/);
  server.kill("SIGINT");
  assertEquals((await server.exit()).code, 0);
  assertEquals(server.stderr.split("\n").filter((l) => l !== ""), [
    `trace: ${who}: until_eol() read 14 bytes "Hello Diesel\\x0d\\x0a"`,
    `trace: ${who}: send() wrote 24 bytes "You said: Hello Diesel\\x0d\\x0a"`,
    `trace: ${who}: until_eol() read 50 bytes ` +
    `"\\x22q\\x22 \\x5c \u00e9 ${"z".repeat(23)}..."`,
    `trace: ${who}: send() wrote 60 bytes ` +
    `"You said: \\x22q\\x22 \\x5c \u00e9 ${"z".repeat(13)}..."`,
    `trace: ${who}: until_eol() read 1 byte "\\x0a"`,
    `trace: ${who}: send() wrote 11 bytes "You said: \\x0a"`,
    `trace: ${who}: until_eol() found the end`,
  ]);
});

/** A terminal's Ctrl-C signals `deno task` and the script at once: one shutdown line and exit 0, every time (it is a race, so many times over). */
Deno.test("2_5: Ctrl-C to the process group of deno task 2_5 shuts down once, exit 0", async () => {
  for (let round = 0; round < 30; round++) {
    await using task = await startTask("2_5");
    if (round % 2 === 1) {
      // Half the rounds with a client, so the shutdown has a connection to close.
      await using client = await TestClient.connect(task.port);
      await client.write("hi\n");
      assertEquals(await client.readLine(), "You said: hi\n");
      task.killGroup("SIGINT");
      assert(await client.closedByPeer(), "the client is closed");
    } else {
      task.killGroup("SIGINT"); // right after the ready line
    }
    const { code } = await task.exit();
    assertEquals(code, 0, `round ${round}\n${task.transcript}`);
    assertEquals(
      task.stdout.match(/Shutting down echo server\.\.\.\n/g)?.length,
      1,
      `round ${round}: one shutdown line\n${task.transcript}`,
    );
  }
});

/** 100 clients that reset while queued make accept() fail 100 times; none of them pauses the server, so the next client is answered at once. */
Deno.test({
  name: "2_5: resets in the accept queue do not make the server deaf",
  ignore: !have("python3"),
  async fn() {
    await using server = await startRecipe(FILE);
    // The client connects after the resets, so its accept() waits behind them.
    const reply = await servedAfterResets(server.port, async () => {
      await using client = await TestClient.connect(server.port);
      await client.write("after the resets\n");
      return await client.readLine();
    });
    assertEquals(reply, "You said: after the resets\n");
  },
});

/** `--host` that the task may not listen on: one line naming the command that works (and it does), exit 1. */
Deno.test("2_5: --host without permission names the command that works, exit 1", async () => {
  const result = await run(DENO, [
    "task",
    "--quiet",
    "2_5",
    "--host=127.0.0.2",
    "--port=0",
  ]);
  assertEquals(result.code, 1, result.stderr);
  const works =
    `deno run --allow-net=127.0.0.2 ${FILE} --host=127.0.0.2 --port=0`;
  assertEquals(
    result.stderr,
    `Error: --host=127.0.0.2 needs network permission for it: ${works}\n`,
  );
  // The named command serves (the tests may not connect to 127.0.0.2).
  await using server = await startRecipe(FILE, {
    permissions: ["--allow-net=127.0.0.2"],
    args: ["--host=127.0.0.2"],
  });
  assertMatch(server.stdout, /^Listening on 127\.0\.0\.2:\d+\n/);
});

/** Without `--host` and without permission (`--no-prompt`): the line names the default host, not a --host nobody gave, and the whole command that works (and it does), exit 1. */
Deno.test("2_5: the default host without permission names the command that works, exit 1", async () => {
  const result = await run(DENO, ["run", "--no-prompt", FILE, "--port=0"]);
  assertEquals(result.code, 1, result.stderr);
  const works = `deno run --allow-net=localhost ${FILE} --port=0`;
  assertEquals(
    result.stderr,
    `Error: listening on localhost (the default host) needs network ` +
      `permission: ${works}\n`,
  );
  await using server = await startRecipe(FILE, {
    permissions: ["--allow-net=localhost"],
  });
  assertMatch(server.stdout, /^Listening on 127\.0\.0\.1:\d+\n/);
});

/** `deno task 2_5 --host=::1`, as `--help` offers it, serves over IPv6; an IPv6 address and its port print as [::1]:port (IPv4 lines stay as the book's). */
Deno.test("2_5: deno task 2_5 --host=::1 serves over IPv6", async () => {
  await using task = await startTask("2_5", { args: ["--host=::1"] });
  assertMatch(task.stdout, /^Listening on \[::1\]:\d+\n/);
  await using client = await TestClient.connect(task.port, "::1");
  await client.write("over IPv6\n");
  assertEquals(await client.readLine(), "You said: over IPv6\n");
  await task.waitFor(/Echo client connected from: \[::1\]:\d+\n/);
  task.killGroup("SIGINT");
  assertEquals((await task.exit()).code, 0);
  assertMatch(
    task.stdout,
    /Echo client \[::1\]:\d+ closed by server shutdown\n/,
  );
});

/** argparse's contract: --help exits 0; a missing or bad --port, or a --line-timeout of 0, exits 2 with the usage and one error line. */
Deno.test("2_5: --help exits 0; a missing or bad --port exits 2 with argparse's usage", () =>
  assertArgparse(FILE, /^usage: .* --port PORT/, [
    [[], /required: --port$/],
    [["--port=abc"], /argument --port: invalid .*'abc'$/],
    [["--port=70000"], /argument --port: invalid .*'70000'$/],
    [["--port=0", "--line-timeout=0"], /argument --line-timeout: invalid/],
  ]));

/** A second server on a port already in use prints one error line on stderr and exits 1. */
Deno.test("2_5: a port already in use is a one-line error and exit 1", async () => {
  await using server = await startRecipe(FILE);
  await assertPortInUse(FILE, [`--port=${server.port}`]);
});

/** netcat, a real client, gets its line echoed back. */
Deno.test({
  name: "2_5: a real nc client gets its reply",
  ignore: !have("nc"),
  async fn() {
    await using server = await startRecipe(FILE);
    const nc = await run("nc", ["-N", "127.0.0.1", String(server.port)], {
      input: "hello from netcat\n",
    });
    assertEquals(nc.stdout, "You said: hello from netcat\n");
  },
});
if (!have("nc")) console.warn("skipping the nc test: nc is not installed");
