import { assert, assertEquals, assertMatch } from "@std/assert";
import { concat } from "@std/bytes/concat";
import {
  assertArgparse,
  assertPortInUse,
  have,
  run,
  startRecipe,
  TestClient,
} from "./harness.ts";

const FILE = "2_5_echo_server_with_diesel.ts";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("2_5: the book's exchange, with LF and CRLF", async () => {
  await using server = await startRecipe(FILE);
  await using client = await TestClient.connect(server.port);
  await server.waitFor(/Echo client connected from: 127\.0\.0\.1:\d+\n/);
  await client.write("Hello Diesel\r\n");
  assertEquals(await client.readLine(), "You said: Hello Diesel\r\n");
  await client.write("from nc\n");
  assertEquals(await client.readLine(), "You said: from nc\n");
});

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

Deno.test("2_5: a line of exactly 64 KiB is still echoed", async () => {
  await using server = await startRecipe(FILE);
  await using client = await TestClient.connect(server.port);
  const line = "y".repeat(64 * 1024) + "\r\n";
  await client.write(line);
  assertEquals(await client.readLine(), `You said: ${line}`);
});

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

Deno.test("2_5: SIGINT and SIGTERM close every connection and exit 0", async () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await using server = await startRecipe(FILE);
    await using client = await TestClient.connect(server.port);
    await server.waitFor(/Echo client connected from/);
    server.kill(signal);
    assertEquals((await server.exit()).code, 0);
    assertMatch(server.stdout, /Shutting down echo server\.\.\.\n/);
    assert(await client.closedByPeer(), `the client is closed on ${signal}`);
  }
});

Deno.test("2_5: --help exits 0; a missing or bad --port exits 2 with argparse's usage", () =>
  assertArgparse(FILE, /^usage: .* --port PORT/, [
    [[], /required: --port$/],
    [["--port=abc"], /argument --port: invalid .*'abc'$/],
    [["--port=70000"], /argument --port: invalid .*'70000'$/],
  ]));

Deno.test("2_5: a port already in use is a one-line error and exit 1", async () => {
  await using server = await startRecipe(FILE);
  await assertPortInUse(FILE, [`--port=${server.port}`]);
});

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
