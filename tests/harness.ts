/**
 * The small shared test harness (tests only: no recipe imports it).
 *
 * - `startRecipe()` runs a recipe as a real subprocess with `--port=0`, waits
 *   (with a deadline) for its ready line and takes the real port from it;
 *   `startTask()` does the same for `deno task X`, in a process group of its
 *   own, as a reader's terminal runs it.
 * - `Recipe` reads the child's later output, writes to its stdin, signals it
 *   and awaits its exit; `await using` kills, reaps and closes everything, so
 *   the op and resource sanitizers (on in deno.json) stay green.
 * - `TestClient` is a TCP client whose every read has a deadline; all its
 *   reads go through one read-until loop.
 * - `run()` runs any program to its end; `assertArgparse()` and
 *   `assertPortInUse()` check the command-line contract every recipe keeps.
 * - `withDeadline()` is std's `deadline()` with a failure message that says
 *   what was awaited.
 *
 * Nothing here sleeps to synchronise: every wait is for a printed line or a
 * byte on a socket, bounded by a deadline that fails with what was captured.
 */

import { assertEquals, assertMatch } from "@std/assert";
import { deadline } from "@std/async/deadline";
import { concat } from "@std/bytes/concat";

/** The repository root: recipes run with it as their working directory. */
export const ROOT = new URL("../", import.meta.url);
/** The network permission most recipes run with. */
export const ALLOW_NET = "--allow-net=localhost,127.0.0.1";

/** How long one wait (a line, a read, an exit) may take unless a test says otherwise. */
const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * How long a recipe may take to print its ready line: longer than other
 * waits, since `deno run` may first type-check the file.
 */
const READY_TIMEOUT_MS = 20_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Resolves or rejects as `promise` does, or rejects after `ms` with an Error
 * that says what was awaited: "timed out after 3000 ms: the reply after 100
 * resets". std's `deadline()` does the timing (an `AbortSignal.timeout`
 * raced against the promise); on its own it would reject with a bare
 * `DOMException` named "TimeoutError", which tells a failing test's reader
 * nothing, so this turns that one rejection into a message and lets every
 * other rejection through as it is.
 */
export async function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  try {
    return await deadline(promise, ms);
  } catch (error) {
    if (error instanceof DOMException && error.name === "TimeoutError") {
      throw new Error(`timed out after ${ms} ms: ${what}`, { cause: error });
    }
    throw error;
  }
}

/** A process's output, for failure messages. */
function transcript(name: string, stdout: string, stderr: string): string {
  return `--- ${name} stdout ---\n${stdout}--- stderr ---\n${stderr}`;
}

/**
 * The Deno that runs the recipes, by name: the test permission set allows
 * running "deno" as found on PATH.
 */
export const DENO = "deno";

/** Is `program` installed? Tests with a real peer (nc, curl, ...) skip without it. */
export function have(program: string): boolean {
  try {
    new Deno.Command(program, { args: ["-h"], stdout: "null", stderr: "null" })
      .outputSync();
    return true;
  } catch {
    return false;
  }
}

/**
 * The path of one of the book's own scripts in the reader's copy named by
 * BOOK_DIR (`.ci/run` points it at ../shared/book/Chapter02), or the reason
 * a test that needs it must skip: unset, no python3, or no such file. The
 * check runs in python3, which will run the script, so the tests need no
 * read permission on the reader's folder.
 */
export function bookScript(
  file: string,
): { path: string; skip?: undefined } | { path?: undefined; skip: string } {
  const dir = Deno.env.get("BOOK_DIR");
  if (!dir) return { skip: "BOOK_DIR is not set (the book's scripts)" };
  if (!have("python3")) return { skip: "python3 is not installed" };
  const path = `${dir.replace(/\/+$/, "")}/${file}`;
  const found = new Deno.Command("python3", {
    args: [
      "-c",
      "import os, sys; sys.exit(not os.path.isfile(sys.argv[1]))",
      path,
    ],
    stdout: "null",
    stderr: "null",
  }).outputSync().success;
  return found ? { path } : { skip: `${path} does not exist (BOOK_DIR)` };
}

/** How every recipe counts in its lines: `plural(count, noun)` and what it gives. */
export function pluralCases(): [number, string, string][] {
  return [[0, "byte", "0 bytes"], [1, "byte", "1 byte"], [
    2,
    "byte",
    "2 bytes",
  ]];
}

/**
 * An address beside its port as every recipe prints it: IPv4 as the book
 * does, IPv6 in brackets as in a URL (its own colons would run into the
 * port's). Port 8800 throughout.
 */
export function addressCases(): [string, string][] {
  return [
    ["127.0.0.1", "127.0.0.1:8800"],
    ["::1", "[::1]:8800"],
    ["fe80::1%eth0", "[fe80::1%eth0]:8800"],
  ];
}

/**
 * What a recipe's trace `preview()` must show for some client bytes: valid,
 * printable UTF-8 as text (Korean included), and escaped what could be
 * misread or drive a terminal (control and format characters, invalid or cut
 * UTF-8, quotes and backslashes); at most 32 bytes, then "...".
 */
export function previewCases(): [Uint8Array, string][] {
  const encoder = new TextEncoder();
  const bytes = (...parts: (string | number[])[]) =>
    new Uint8Array(
      parts.flatMap((p) => typeof p === "string" ? [...encoder.encode(p)] : p),
    );
  return [
    [bytes("NAME: 김철수"), '"NAME: 김철수"'],
    [bytes('say "hi" \\ é'), '"say \\x22hi\\x22 \\x5c é"'],
    [bytes("a\x01\x1b[2J\t\r\n\x7f"), '"a\\x01\\x1b[2J\\x09\\x0d\\x0a\\x7f"'],
    [bytes("\u0085\u202e\u200b"), '"\\xc2\\x85\\xe2\\x80\\xae\\xe2\\x80\\x8b"'],
    [bytes([0xff, 0xc0, 0xaf], "ok"), '"\\xff\\xc0\\xafok"'],
    [bytes([0xed, 0xa0, 0x80]), '"\\xed\\xa0\\x80"'], // a surrogate
    [bytes("김", [0xea, 0xb9]), '"김\\xea\\xb9"'], // cut at the end
    [bytes("a".repeat(32)), `"${"a".repeat(32)}"`],
    [bytes("a".repeat(33)), `"${"a".repeat(32)}..."`],
    // "김" would cross the 32-byte limit: left to the "...".
    [bytes("a".repeat(30), "김"), `"${"a".repeat(30)}..."`],
    [bytes(""), '""'],
  ];
}

/**
 * Headless Chromium's flags, as root on a machine with no network beyond
 * loopback: without the background-networking ones it keeps trying hosts
 * this machine cannot reach. Add `--user-data-dir` (a fresh folder) and what
 * to do (`--dump-dom URL`).
 */
export const HEADLESS_CHROMIUM = [
  "--headless",
  "--no-sandbox", // as root
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

/**
 * The text of one of the book's scripts in BOOK_DIR, or the reason to skip
 * (as bookScript). python3 reads it, so the tests need no read permission on
 * the reader's folder.
 */
export async function readBookScript(
  file: string,
): Promise<
  { text: string; skip?: undefined } | { text?: undefined; skip: string }
> {
  const found = bookScript(file);
  if (found.skip !== undefined) return { skip: found.skip };
  const output = await new Deno.Command("python3", {
    args: [
      "-c",
      "import sys; sys.stdout.write(open(sys.argv[1]).read())",
      found.path,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(
      `python3 could not read ${found.path}: ${
        new TextDecoder().decode(output.stderr)
      }`,
    );
  }
  return { text: new TextDecoder().decode(output.stdout) };
}

/**
 * python3: connect, send the optional bytes, and reset (SO_LINGER 0), `n`
 * times, as fast as it can.
 */
const RESET_SCRIPT = `
import socket, struct, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = sys.argv[4].encode() if len(sys.argv) > 4 else b""
for _ in range(n):
    s = socket.create_connection((host, port))
    if data:
        s.sendall(data)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
`;

/**
 * Opens `count` connections to the port and resets each at once, so most
 * are reset while still in the listener's accept queue: Deno's `accept()`
 * then rejects (`NotConnected`, os error 107) for each. Needs python3 (Deno
 * cannot set SO_LINGER); returns false, to skip, without it.
 */
export async function resetWhileQueued(
  port: number,
  count: number,
  host = "127.0.0.1",
): Promise<boolean> {
  if (!have("python3")) return false;
  const { success, stderr } = await new Deno.Command("python3", {
    args: ["-c", RESET_SCRIPT, host, String(port), String(count)],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`resets failed: ${decoder.decode(stderr)}`);
  return true;
}

/**
 * The accept-queue check every server shares: 100 connections reset while
 * queued (each makes `accept()` reject), then `serve()` (one normal client's
 * exchange) must finish within 3 s. 100 pauses of 100 ms would take 10 s, so
 * 3 s is a bound that only a server that does not pause for a reset meets,
 * not a speed claim. Returns what `serve()` returned.
 */
export async function servedAfterResets<T>(
  port: number,
  serve: () => Promise<T>,
): Promise<T> {
  assertEquals(await resetWhileQueued(port, 100), true, "python3 ran");
  return await withDeadline(serve(), 3_000, "the client after 100 resets");
}

/**
 * Opens `count` connections that each send `text` and reset at once, before
 * any reply can come: the server's write of the reply then fails. Needs
 * python3; returns false, to skip, without it.
 */
export async function resetAfterSending(
  port: number,
  text: string,
  count = 1,
  host = "127.0.0.1",
): Promise<boolean> {
  if (!have("python3")) return false;
  const { success, stderr } = await new Deno.Command("python3", {
    args: ["-c", RESET_SCRIPT, host, String(port), String(count), text],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`resets failed: ${decoder.decode(stderr)}`);
  return true;
}

/** How `startRecipe()` and `startTask()` start a process. */
export interface StartOptions {
  /** Arguments after the file name; `--port=0` is added unless `port: false`. */
  args?: string[];
  /** `deno run` permission flags; the default is the recipes' usual `--allow-net`. */
  permissions?: string[];
  /** Matches the ready line; its first group, if any, is the real port. */
  ready?: RegExp;
  /** Add `--port=0` (default true). */
  port?: boolean;
}

/** One running recipe process and everything it printed so far. */
export class Recipe implements AsyncDisposable {
  /** The port named by the ready line (0 when the ready pattern has no group). */
  port = 0;
  /** Everything the process printed on stdout so far. */
  stdout = "";
  /** Everything the process printed on stderr so far. */
  stderr = "";
  #file: string;
  #child: Deno.ChildProcess;
  #status: Promise<Deno.CommandStatus>;
  #cursor = 0;
  #wake: () => void = () => {};
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #pumps: Promise<void>[];
  #readers: ReadableStreamDefaultReader<string>[] = [];
  #exited = false;
  #stdoutEnded = false;
  #group: boolean;

  /**
   * Runs `program` with `args` (for a recipe: `deno run --quiet <flags>
   * <file> ...`); `file` names it in failure messages.
   */
  constructor(file: string, args: string[], program = DENO) {
    this.#file = file;
    this.#group = program === "setsid";
    this.#child = new Deno.Command(program, {
      args,
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#status = this.#child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#stdin = this.#child.stdin.getWriter();
    this.#pumps = [
      this.#pump(this.#child.stdout, (text) => this.stdout += text)
        .then(() => {
          this.#stdoutEnded = true;
          this.#wake();
        }),
      this.#pump(this.#child.stderr, (text) => this.stderr += text),
    ];
  }

  async #pump(stream: ReadableStream<Uint8Array>, append: (t: string) => void) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    this.#readers.push(reader);
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        append(value);
        this.#wake();
      }
    } catch {
      // cancelled by dispose
    } finally {
      this.#wake();
    }
  }

  /** What the process printed, for failure messages. */
  get transcript(): string {
    return transcript(this.#file, this.stdout, this.stderr);
  }

  /**
   * Waits until `pattern` appears in stdout after everything already
   * consumed, consumes up to the end of the match and returns the match.
   * One wait at a time per process: a second would replace the first.
   */
  async waitFor(
    pattern: string | RegExp,
    ms = DEFAULT_TIMEOUT_MS,
  ): Promise<RegExpExecArray> {
    const regex = typeof pattern === "string"
      ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      : pattern;
    const found = new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const rest = this.stdout.slice(this.#cursor);
        const match = regex.exec(rest);
        if (match) {
          this.#cursor += match.index + match[0].length;
          this.#wake = () => {};
          resolve(match);
        } else if (this.#stdoutEnded) {
          this.#wake = () => {};
          reject(new Error(`output ended before ${regex}`));
        }
      };
      this.#wake = check;
      check();
    });
    try {
      return await withDeadline(
        found,
        ms,
        `waiting for ${regex} from ${this.#file}`,
      );
    } catch (error) {
      this.#wake = () => {};
      throw new Error(`${(error as Error).message}\n${this.transcript}`);
    }
  }

  /** Writes `text` to the process's stdin, as a reader typing would. */
  async write(text: string | Uint8Array): Promise<void> {
    await this.#stdin.write(
      typeof text === "string" ? encoder.encode(text) : text,
    );
  }

  /** Closes the process's stdin, as Ctrl-D at a terminal does. */
  async closeStdin(): Promise<void> {
    await this.#stdin.close().catch(() => {});
  }

  /**
   * Signals the child's whole process group, as a terminal's Ctrl-C does
   * (the child must lead its group: `startTask` runs it under `setsid`).
   */
  killGroup(signal: Deno.Signal = "SIGINT"): void {
    // kill(1), since Deno.kill() of a group needs --allow-run for everything.
    new Deno.Command("kill", {
      args: [`-${signal.replace(/^SIG/, "")}`, "--", `-${this.#child.pid}`],
      stdout: "null",
      stderr: "null",
    }).outputSync();
  }

  /** Sends `signal` to the process itself; a process that already exited is no error. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.#child.kill(signal);
    } catch (error) {
      // It may have exited before its status was read; anything else is real.
      if (!(error instanceof TypeError)) throw error;
    }
  }

  /**
   * Waits for the process to exit and for its output to be read whole; on a
   * timeout it fails with what the process printed.
   */
  async exit(ms = DEFAULT_TIMEOUT_MS): Promise<Deno.CommandStatus> {
    try {
      const status = await withDeadline(
        this.#status,
        ms,
        `exit of ${this.#file}`,
      );
      await this.#finishPumps();
      return status;
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${this.transcript}`);
    }
  }

  async #finishPumps() {
    // A grandchild may hold the pipes open after the child is gone: give the
    // output a moment to end by itself, then stop reading.
    await withDeadline(Promise.all(this.#pumps), 2_000, "output end").catch(
      () => Promise.all(this.#readers.map((r) => r.cancel().catch(() => {}))),
    );
    await Promise.all(this.#pumps);
  }

  /** Kills the process if it still runs (its group, under `setsid`), reaps it and stops reading. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#stdin.close().catch(() => {});
    if (!this.#exited) {
      try {
        if (this.#group) this.killGroup("SIGKILL"); // the script too
        else this.#child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    await this.#status;
    await this.#finishPumps();
  }
}

/**
 * Runs `command` (a program and its arguments) with its stderr joined to its
 * stdout, as a terminal shows both: one stream, in the order the process
 * wrote them. Deno gives a child separate pipes, so python3 does the
 * joining (`dup2`) and then becomes the command. `file` names it in
 * failure messages.
 */
export function withStderrJoined(file: string, command: string[]): Recipe {
  const join =
    "import os, sys; os.dup2(1, 2); os.execvp(sys.argv[1], sys.argv[1:])";
  return new Recipe(file, ["-c", join, ...command], "python3");
}

/**
 * Starts `file` (relative to the repository root) and waits for its ready
 * line. On a timeout or an early exit it fails with the child's output.
 */
export async function startRecipe(
  file: string,
  options: StartOptions = {},
): Promise<Recipe> {
  const args = [...(options.args ?? [])];
  if (options.port ?? true) args.push("--port=0");
  const permissions = options.permissions ?? [ALLOW_NET];
  const recipe = new Recipe(file, [
    "run",
    "--quiet",
    ...permissions,
    file,
    ...args,
  ]);
  return await ready(recipe, options);
}

/**
 * Starts `deno task <task> <args>` as a reader does, in a process group of
 * its own (under `setsid`), so `killGroup("SIGINT")` reaches the task runner
 * and the script at once, as a terminal's Ctrl-C does. Waits for the ready
 * line as `startRecipe` does; `port: false` leaves out `--port=0`.
 */
export async function startTask(
  task: string,
  options: StartOptions = {},
): Promise<Recipe> {
  const args = [...(options.args ?? [])];
  if (options.port ?? true) args.push("--port=0");
  const recipe = new Recipe(
    `deno task ${task}`,
    [DENO, "task", "--quiet", task, ...args],
    "setsid",
  );
  return await ready(recipe, options);
}

/** Waits for the ready line and takes the port from it; on a failure, disposes of the process. */
async function ready(recipe: Recipe, options: StartOptions): Promise<Recipe> {
  try {
    const match = await recipe.waitFor(
      options.ready ?? /Listening on \S+:(\d+)/,
      READY_TIMEOUT_MS,
    );
    if (match[1]) recipe.port = Number(match[1]);
    return recipe;
  } catch (error) {
    await recipe[Symbol.asyncDispose]();
    throw error;
  }
}

/** How a program run by `run()` ended: its exit code and all it printed. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs any program (`DENO` with a recipe, or a peer such as nc or curl) to
 * its end with `input` on stdin and `env` added to this process's
 * environment. At the deadline it kills the program and fails with what it
 * printed until then.
 */
export async function run(
  program: string,
  args: string[],
  { input = "", ms = DEFAULT_TIMEOUT_MS, env = {} } = {},
): Promise<RunResult> {
  const child = new Deno.Command(program, {
    args,
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  // Read the output while writing the input, both inside the deadline: a
  // program that prints much before it reads must not block the write.
  const output = child.output();
  const writer = child.stdin.getWriter();
  const writing = writer.write(encoder.encode(input))
    .then(() => writer.close()).catch(() => {});
  try {
    const [{ code, stdout, stderr }] = await withDeadline(
      Promise.all([output, writing]),
      ms,
      `${program} ${args.join(" ")}`,
    );
    return {
      code,
      stdout: decoder.decode(stdout),
      stderr: decoder.decode(stderr),
    };
  } catch (error) {
    try {
      child.kill("SIGKILL");
    } catch {
      // it exited on its own
    }
    // The pipes end with the process, so its output so far can be read whole.
    const [{ stdout, stderr }] = await Promise.all([output, writing]);
    const printed = transcript(
      program,
      decoder.decode(stdout),
      decoder.decode(stderr),
    );
    throw new Error(`${(error as Error).message}\n${printed}`, {
      cause: error,
    });
  }
}

/**
 * Which bytes a read takes from what has arrived: their count, once
 * `buffered` holds them, or `undefined` to wait for more. `closed` is true
 * once the peer has closed its side and nothing more will come; then
 * `undefined` means the peer closed too early, and the read fails saying so.
 */
type Until = (buffered: Uint8Array, closed: boolean) => number | undefined;

/** At most this much of the received bytes goes into a failure message. */
const PREVIEW_BYTES = 200;

/**
 * A TCP client whose every read has a deadline. Every read is one call of
 * `#readUntil()` with a different `Until`; what a read does not take stays
 * buffered for the next.
 */
export class TestClient implements AsyncDisposable {
  #buffer = new Uint8Array(0);
  #eof = false;
  #closed = false;
  /** "host:port" of the server, for failure messages. */
  readonly #peer: string;

  /** Wraps a connection made elsewhere; `TestClient.connect()` makes one. */
  constructor(readonly conn: Deno.TcpConn) {
    this.#peer = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
  }

  /** Connects to `hostname:port` over TCP. */
  static async connect(
    port: number,
    hostname = "127.0.0.1",
  ): Promise<TestClient> {
    return new TestClient(await Deno.connect({ hostname, port }));
  }

  /** Writes every byte (conn.write may take only part of a buffer). */
  async write(data: string | Uint8Array): Promise<void> {
    let bytes = typeof data === "string" ? encoder.encode(data) : data;
    while (bytes.length > 0) {
      bytes = bytes.subarray(await this.conn.write(bytes));
    }
  }

  /** Closes the sending side only (a TCP FIN): the server reads EOF, and can still answer. */
  closeWrite(): Promise<void> {
    return this.conn.closeWrite();
  }

  /** The next line as bytes, with its "\n"; at EOF, whatever is left (maybe empty). */
  readLineBytes(ms = DEFAULT_TIMEOUT_MS): Promise<Uint8Array> {
    return this.#readUntil(
      (buffered, closed) => {
        const newline = buffered.indexOf(10);
        if (newline >= 0) return newline + 1;
        return closed ? buffered.length : undefined;
      },
      ms,
      "reading a line",
    );
  }

  /** The next line as text, with its terminator; "" at EOF. */
  async readLine(ms = DEFAULT_TIMEOUT_MS): Promise<string> {
    return decoder.decode(await this.readLineBytes(ms));
  }

  /** Exactly `n` bytes; fails if the peer closes first. */
  readBytes(n: number, ms = DEFAULT_TIMEOUT_MS): Promise<Uint8Array> {
    return this.#readUntil(
      (buffered) => buffered.length >= n ? n : undefined,
      ms,
      `reading ${n} bytes`,
    );
  }

  /** Everything until the peer closes. */
  readUntilClose(ms = DEFAULT_TIMEOUT_MS): Promise<Uint8Array> {
    return this.#readUntil(
      (buffered, closed) => closed ? buffered.length : undefined,
      ms,
      "reading until the peer closes",
    );
  }

  /** True when the peer closed (or reset) before sending anything more. */
  async closedByPeer(ms = DEFAULT_TIMEOUT_MS): Promise<boolean> {
    try {
      return (await this.readUntilClose(ms)).length === 0;
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) return true;
      throw error;
    }
  }

  /**
   * The one read loop: asks `until` how many buffered bytes to take, and
   * while it says "more", reads another chunk, all within one deadline of
   * `ms`. On a timeout, an early close or an error it closes the connection
   * (which also settles a `conn.read()` still pending, so no op outlives the
   * test) and fails saying what it was reading and what had arrived.
   */
  async #readUntil(
    until: Until,
    ms: number,
    what: string,
  ): Promise<Uint8Array> {
    const reading = `${what} from ${this.#peer}`;
    try {
      return await withDeadline(this.#readLoop(until, reading), ms, reading);
    } catch (error) {
      this.close();
      if (error instanceof Deno.errors.ConnectionReset) throw error;
      throw new Error(`${(error as Error).message}; ${this.#received()}`, {
        cause: error,
      });
    }
  }

  async #readLoop(until: Until, reading: string): Promise<Uint8Array> {
    const chunk = new Uint8Array(64 * 1024);
    while (true) {
      const count = until(this.#buffer, this.#eof);
      if (count !== undefined) return this.#take(count);
      if (this.#eof) throw new Error(`the peer closed while ${reading}`);
      // conn.read() resolves with the byte count of one arrival (at most
      // chunk.length), or null once the peer has closed its side.
      const n = await this.conn.read(chunk);
      if (n === null) {
        this.#eof = true;
      } else {
        this.#buffer = concat([this.#buffer, chunk.subarray(0, n)]);
      }
    }
  }

  #take(n: number): Uint8Array {
    const taken = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return taken;
  }

  /** What arrived and was not taken, for failure messages. */
  #received(): string {
    const shown = decoder.decode(this.#buffer.subarray(0, PREVIEW_BYTES));
    const more = this.#buffer.length > PREVIEW_BYTES ? "..." : "";
    return `${this.#buffer.length} bytes received: ${
      JSON.stringify(shown)
    }${more}`;
  }

  /** Closes the connection; a second close does nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  /** `await using` closes the connection. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * argparse's contract, which every recipe keeps: `--help` prints a usage
 * matching `usage` and exits 0; each bad argument list exits 2 with the usage
 * line and one `FILE: error: ...` line, matching its pattern.
 */
export async function assertArgparse(
  file: string,
  usage: RegExp,
  bad: [string[], RegExp][],
): Promise<void> {
  const help = await run(DENO, ["run", file, "--help"]);
  assertEquals(help.code, 0, help.stderr);
  assertMatch(help.stdout, usage);
  for (const [args, error] of bad) {
    const result = await run(DENO, ["run", file, ...args]);
    assertEquals(result.code, 2, `exit code for ${args}`);
    const lines = result.stderr.trimEnd().split("\n");
    assertEquals(lines.length, 2, `usage and one error line for ${args}`);
    assertMatch(lines[0], /^usage: \S+\.ts \[-h\]/);
    assertEquals(lines[1].slice(0, file.length + 9), `${file}: error: `);
    assertMatch(lines[1], error);
  }
}

/** A second copy on a port already in use: one line on stderr, exit 1. */
export async function assertPortInUse(
  file: string,
  args: string[],
  permissions = [ALLOW_NET],
): Promise<void> {
  const result = await run(DENO, ["run", ...permissions, file, ...args]);
  assertEquals(result.code, 1, result.stderr);
  assertMatch(
    result.stderr,
    /^Error: cannot listen on localhost:\d+: .*in use.*\n$/,
  );
}

/**
 * A terminal's Ctrl-C under `deno task`: SIGINT reaches the task runner and
 * the script at once, and the runner forwards one more to the script. Runs
 * `deno task <task>` `rounds` times (it is a race, so many times over), each
 * time signalling the whole group right after the ready line: every round
 * must exit 0 and print `shutdown` exactly once; `check` may assert more.
 */
export async function assertCtrlCUnderTask(
  task: string,
  options: StartOptions & {
    rounds: number;
    shutdown: RegExp;
    check?: (task: Recipe) => void;
  },
): Promise<void> {
  for (let round = 0; round < options.rounds; round++) {
    await using started = await startTask(task, options);
    started.killGroup("SIGINT");
    const { code } = await started.exit();
    const what = `round ${round} of deno task ${task}\n${started.transcript}`;
    assertEquals(code, 0, `exit code, ${what}`);
    const lines = started.stdout.match(new RegExp(options.shutdown, "g"));
    assertEquals(lines?.length, 1, `one shutdown line, ${what}`);
    options.check?.(started);
  }
}
