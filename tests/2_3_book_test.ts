// 2_3 in one room with the book's own script: the book's Python server with
// Deno clients (`--wire=book`), and this server with the book's Python
// clients, all talking at once; a pickle that would run a command is dropped
// before anyone sees it. The book's script comes from BOOK_DIR (the reader's
// copy); without it these tests skip, saying so.
//
//     BOOK_DIR=/path/to/Chapter02 deno test -P tests/2_3_book_test.ts

import { assert, assertEquals, assertMatch } from "@std/assert";
import { concat } from "@std/bytes/concat";
import { bookScript, Recipe, startRecipe, TestClient } from "./harness.ts";

// A pickle that runs `touch .pwned-2_3` when unpickled: os.system through
// GLOBAL and REDUCE (protocol 2), and through STACK_GLOBAL and REDUCE
// (protocol 4). As in 2_3_frames_test.ts, made by
// python3 -c 'import pickle, os
// class Run:
//     def __reduce__(self): return (os.system, ("touch .pwned-2_3",))
// print(pickle.dumps((Run(),), protocol=2).hex()); print(pickle.dumps((Run(),), protocol=4).hex())'
const OS_SYSTEM_PICKLES = [
  "800263706f7369780a73797374656d0a71005810000000746f756368202e70776e65642d325f3371018571025271038571042e",
  "8004952d000000000000008c05706f736978948c0673797374656d9493948c10746f756368202e70776e65642d325f33948594529485942e",
];

const FILE = "2_3_chat_server_with_select.ts";
const book = bookScript("2_3_chat_server_with_select.py");
const encoder = new TextEncoder();
/** A test's name, with the reason it skips when the book's script is missing. */
const named = (name: string) =>
  book.skip === undefined ? name : `${name} (skipped: ${book.skip})`;

/** Runs the book's script (unbuffered, so its lines come as printed). */
async function startBook(args: string[], ready: RegExp): Promise<Recipe> {
  const recipe = new Recipe(
    "the book's 2_3",
    ["-u", book.path!, ...args],
    "python3",
  );
  try {
    await recipe.waitFor(ready, 20_000);
    return recipe;
  } catch (error) {
    await recipe[Symbol.asyncDispose]();
    throw error;
  }
}

/** A port nobody listens on now (the book's server cannot be given 0). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** The book's server, returned once it listens on `port`. */
function bookServer(port: number): Promise<Recipe> {
  return startBook(
    ["--name=server", `--port=${port}`],
    /Server listening to port: \d+ \.\.\.\n/,
  );
}

/** The book's client, returned once its prompt shows the handshake done. */
async function bookClient(port: number, name: string): Promise<Recipe> {
  const client = await startBook(
    [`--name=${name}`, `--port=${port}`],
    /Now connected to chat server@ port \d+\n/,
  );
  await client.waitFor(`[${name}@127.0.0.1]> `);
  return client;
}

/** Our client, with the given wire, once its handshake is done. */
async function denoClient(
  port: number,
  name: string,
  wire: "json" | "book",
): Promise<Recipe> {
  const client = await startRecipe(FILE, {
    args: [`--name=${name}`, `--port=${port}`, `--wire=${wire}`],
    ready: /Now connected to chat server@ port \d+\n/,
    port: false,
  });
  await client.waitFor(`[${name}@127.0.0.1]> `);
  return client;
}

/** `from` types a line; each of `to` shows it as the book shows a message. */
async function says(from: Recipe, name: string, text: string, to: Recipe[]) {
  await from.write(`${text}\n`);
  for (const client of to) {
    await client.waitFor(`\n#[${name}@127.0.0.1]>>${text}\n`);
  }
}

/**
 * The conversation both mixed rooms hold, with the clients in the order they
 * joined: the first, the third and the second each say a line that the other
 * two see; the second is interrupted (Ctrl-C), leaves with exit 0, and the
 * other two see it hang up; then the third says one more line to the first.
 */
async function converse(
  server: Recipe,
  [[first, firstName], [second, secondName], [third, thirdName]]: [
    Recipe,
    string,
  ][],
  [hello, answer, back]: string[],
) {
  await says(first, firstName, hello, [second, third]);
  await says(third, thirdName, answer, [first, second]);
  await says(second, secondName, back, [first, third]);
  second.kill("SIGINT");
  assertEquals((await second.exit()).code, 0);
  assertMatch(second.stdout, / Client interrupted\. \n$/);
  await server.waitFor(/Chat server: \d+ hung up\n/);
  for (const c of [first, third]) {
    await c.waitFor(`\n(Now hung up: Client from ${secondName}@127.0.0.1)\n`);
  }
  await says(third, thirdName, "still here", [first]);
}

/** A book frame (8-byte header) holding `body` as it is. */
function book8(body: Uint8Array): Uint8Array {
  const header = new Uint8Array(8);
  new DataView(header.buffer).setUint32(0, body.length);
  return concat([header, body]);
}

/** The book's server, two Deno clients speaking its frames and one book client converse: joins, messages both ways, a hang-up. */
Deno.test({
  name: named(
    "2_3: the book's server with two Deno --wire=book clients and a book client",
  ),
  ignore: book.skip !== undefined,
  async fn() {
    const port = freePort();
    await using server = await bookServer(port);
    await using d1 = await denoClient(port, "deno1", "book");
    await using d2 = await denoClient(port, "deno2", "book");
    await d1.waitFor("\n(Connected: New client (2) from deno2@127.0.0.1)\n");
    await using b1 = await bookClient(port, "python1");
    for (const c of [d1, d2]) {
      await c.waitFor("\n(Connected: New client (3) from python1@127.0.0.1)\n");
    }
    await converse(server, [[d1, "deno1"], [d2, "deno2"], [b1, "python1"]], [
      "Hello from Deno",
      "안녕하세요 from the book's client",
      "and back",
    ]);
  },
});

/** This server, two of the book's clients and one Deno JSON client converse: each gets every frame in its own wire. */
Deno.test({
  name: named("2_3: our server with two book clients and a Deno JSON client"),
  ignore: book.skip !== undefined,
  async fn() {
    await using server = await startRecipe(FILE, {
      args: ["--name=server"],
      ready: /Server listening to port: (\d+) \.\.\.\n/,
    });
    await using b1 = await bookClient(server.port, "python1");
    await using b2 = await bookClient(server.port, "python2");
    await b1.waitFor("\n(Connected: New client (2) from python2@127.0.0.1)\n");
    await using d1 = await denoClient(server.port, "deno1", "json");
    for (const c of [b1, b2]) {
      await c.waitFor("\n(Connected: New client (3) from deno1@127.0.0.1)\n");
    }
    await converse(server, [[b1, "python1"], [b2, "python2"], [d1, "deno1"]], [
      "Hello from the book",
      "안녕하세요 from Deno",
      "and from the other one",
    ]);
  },
});

/**
 * A client sending a pickle that calls os.system (GLOBAL/REDUCE, or
 * STACK_GLOBAL/REDUCE) is dropped and nobody receives anything of it; a
 * book frame written one byte at a time arrives whole.
 */
Deno.test({
  name: named(
    "2_3: an os.system pickle gets its sender dropped, nothing relayed; a frame sent byte by byte arrives whole",
  ),
  ignore: book.skip !== undefined,
  async fn() {
    await using server = await startRecipe(FILE, {
      args: ["--name=server"],
      ready: /Server listening to port: (\d+) \.\.\.\n/,
    });
    await using b1 = await bookClient(server.port, "python1");
    await using d1 = await denoClient(server.port, "deno1", "json");
    await b1.waitFor("\n(Connected: New client (2) from deno1@127.0.0.1)\n");
    const heard = b1.stdout.length;

    // One that names itself in the book's frames, then sends the attack.
    await using named = await TestClient.connect(server.port);
    await named.write(book8(encodeBookBody("NAME: attacker")));
    await named.readBytes(8 + encodeBookBody("CLIENT: 127.0.0.1").length);
    for (const c of [b1, d1]) {
      await c.waitFor(
        "\n(Connected: New client (3) from attacker@127.0.0.1)\n",
      );
    }
    await named.write(book8(hexBytes(OS_SYSTEM_PICKLES[0])));
    await server.waitFor(
      /dropped: a book frame that is not a pickled text: pickle opcode 0x63 \(GLOBAL\) at byte 2/,
    );
    assert(await named.closedByPeer(), "the attacker is closed");
    for (const c of [b1, d1]) {
      await c.waitFor("\n(Now hung up: Client from attacker@127.0.0.1)\n");
    }
    // One whose first frame is the attack: dropped before it is anyone.
    await using first = await TestClient.connect(server.port);
    await first.write(book8(hexBytes(OS_SYSTEM_PICKLES[1])));
    // (its module name is a text; the strict grammar ends right there)
    await server.waitFor(
      /dropped: a book frame that is not a pickled text: pickle opcode 0x8c \(SHORT_BINUNICODE\) at byte 19/,
    );
    assert(await first.closedByPeer(), "the second attacker is closed");

    // A book frame one byte per write, each sent at once (no Nagle delay).
    await using slow = await TestClient.connect(server.port);
    slow.conn.setNoDelay(true);
    for (const text of ["NAME: slow", "one byte at a time, 한 바이트씩"]) {
      for (const byte of book8(encodeBookBody(text))) {
        await slow.write(new Uint8Array([byte]));
      }
    }
    await b1.waitFor("\n#[slow@127.0.0.1]>>one byte at a time, 한 바이트씩\n");
    await says(d1, "deno1", "after the attacks", [b1]);

    // The book client, which would run any pickle it is handed, heard only
    // the notices and the messages, and nothing ran.
    const since = b1.stdout.slice(heard).replaceAll(
      "[python1@127.0.0.1]> ",
      "",
    );
    assertEquals(
      since,
      "\n(Connected: New client (3) from attacker@127.0.0.1)\n" +
        "\n(Now hung up: Client from attacker@127.0.0.1)\n" +
        "\n(Connected: New client (3) from slow@127.0.0.1)\n" +
        "\n#[slow@127.0.0.1]>>one byte at a time, 한 바이트씩\n" +
        "\n#[deno1@127.0.0.1]>>after the attacks\n",
    );
    const ran = await Deno.stat(new URL("../.pwned-2_3", import.meta.url))
      .then(() => true, () => false);
    assert(!ran, "the pickled command ran");
  },
});

function hexBytes(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

/** pickle.dumps((text,)) for short texts, written out by hand (protocol 4). */
function encodeBookBody(text: string): Uint8Array {
  const utf8 = encoder.encode(text);
  assert(utf8.length < 256, "a short text");
  const frame = new Uint8Array(8);
  new DataView(frame.buffer).setUint32(0, utf8.length + 6, true);
  return concat([
    new Uint8Array([0x80, 4, 0x95]),
    frame,
    new Uint8Array([0x8c, utf8.length]),
    utf8,
    new Uint8Array([0x94, 0x85, 0x94, 0x2e]),
  ]);
}

/** A Deno client with the default wire against the book's server: the book's server crashes on the JSON frame (its bug) and resets the connection; the client says it could not connect, why, and that --wire=book speaks the book's frames. */
Deno.test({
  name: named(
    "2_3: a JSON client against the book's server is told to use --wire=book",
  ),
  ignore: book.skip !== undefined,
  async fn() {
    const port = freePort();
    await using server = await bookServer(port);
    await using client = await startRecipe(FILE, {
      args: ["--name=client1", `--port=${port}`],
      ready: /Now connected to chat server@ port \d+\n/,
      port: false,
    });
    assertEquals((await client.exit()).code, 1);
    assertEquals(
      client.stdout,
      `Now connected to chat server@ port ${port}\n` +
        `Failed to connect to chat server @ port ${port}\n`,
    );
    assertMatch(
      client.stderr,
      /^Error: the connection ended before the server's reply \(.*\); a server that speaks the book's frames \(the book's Python script\) needs --wire=book\n$/,
    );
    await server.exit();
  },
});
