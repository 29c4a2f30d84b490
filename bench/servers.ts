/**
 * Starting and stopping the servers under test: our recipes (run with the
 * flags of their own `deno task`), the peers in bench/peers/, and a reader's
 * `--vs` command. Each may be pinned to its own core with `taskset`.
 */

export const ROOT = new URL("../", import.meta.url);
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const TAIL_CHARS = 2_000;

export interface ServerSpec {
  /** The row label: "2_4 (ours)", "Node http", "2_4 (book, Python)", "vs: python3 ...". */
  label: string;
  kind: "ours" | "peer" | "book" | "vs";
  /** Program and arguments; "{port}" is replaced by a free port. */
  command: string[];
  /** The ready line; group 1 is the port. Without it, "{port}" is used. */
  ready?: RegExp;
  /** A file that must exist (a recipe not written yet is "missing"). */
  file?: string;
  /** Why this server is not run at all (its rows say so): "BOOK_DIR is not set". */
  skip?: string;
}

export class MissingError extends Error {}

/** Splits a `--vs` command line like a shell would (quotes, no expansion). */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (const m of line.matchAll(pattern)) {
    words.push(
      m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2] ?? m[3],
    );
  }
  return words;
}

/** `deno run <flags> FILE` as the recipe's task in deno.json has it. */
export async function recipeCommand(
  task: string,
  file: string,
): Promise<string[]> {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  );
  const line: string | undefined = config.tasks?.[task];
  const words = line ? splitCommand(line) : [];
  if (words[0] === "deno" && words[1] === "run" && words.at(-1) === file) {
    return ["deno", "run", "--quiet", ...words.slice(2)];
  }
  return ["deno", "run", "--quiet", "--allow-net=localhost,127.0.0.1", file];
}

/** A free port on 127.0.0.1 (bound, read, released) for a `--vs` command. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

export class Server {
  port = 0;
  #stdout = "";
  #stderr = "";
  #ready = false;
  #wake = () => {};
  #pumps: Promise<void>[];
  #readers: ReadableStreamDefaultReader<string>[] = [];
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;

  private constructor(
    readonly spec: ServerSpec,
    readonly child: Deno.ChildProcess,
  ) {
    this.status = child.status.then((status) => {
      this.#exited = true;
      this.#wake();
      return status;
    });
    this.#pumps = [
      this.#pump(
        child.stdout,
        (text) => this.#stdout = this.#keep(this.#stdout + text),
      ),
      this.#pump(
        child.stderr,
        (text) => this.#stderr = (this.#stderr + text).slice(-TAIL_CHARS),
      ),
    ];
  }

  /** Until the ready line is seen, stdout is kept whole; then only its tail. */
  #keep(text: string): string {
    return this.#ready ? text.slice(-TAIL_CHARS) : text;
  }

  async #pump(
    stream: ReadableStream<Uint8Array>,
    append: (text: string) => void,
  ) {
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
      // cancelled at stop
    }
  }

  /** The last things it printed, for a failure report. */
  get tail(): string {
    const out = this.#stdout.trim().split("\n").slice(-5).join("\n");
    const err = this.#stderr.trim().split("\n").slice(-5).join("\n");
    return [out && `stdout: ${out}`, err && `stderr: ${err}`].filter(Boolean)
      .join("\n");
  }

  get exited(): boolean {
    return this.#exited;
  }

  /** Starts the server (pinned with `pin`, e.g. ["taskset", "-c", "1"]) and waits until it is ready. */
  static async start(spec: ServerSpec, pin: string[]): Promise<Server> {
    if (spec.file) {
      try {
        await Deno.stat(new URL(spec.file, ROOT));
      } catch {
        throw new MissingError(`${spec.file} does not exist yet`);
      }
    }
    const port = spec.ready ? 0 : freePort();
    const command = [
      ...pin,
      ...spec.command.map((w) => w.replaceAll("{port}", String(port))),
    ];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(command[0], {
        args: command.slice(1),
        cwd: ROOT,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1", PYTHONUNBUFFERED: "1" },
      }).spawn();
    } catch (error) {
      throw new Error(
        `cannot start ${command[0]}: ${(error as Error).message}`,
      );
    }
    const server = new Server(spec, child);
    server.port = port;
    if (spec.ready) {
      try {
        server.port = await server.#waitReady(spec.ready);
      } catch (error) {
        await server.stop();
        throw error;
      }
    }
    return server;
  }

  #waitReady(ready: RegExp): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#wake = () => {};
        reject(
          new Error(
            `no ready line ${ready} within ${READY_TIMEOUT_MS} ms\n${this.tail}`,
          ),
        );
      }, READY_TIMEOUT_MS);
      this.#wake = () => {
        const match = ready.exec(this.#stdout);
        if (match) {
          clearTimeout(timer);
          this.#ready = true;
          this.#stdout = this.#keep(this.#stdout);
          this.#wake = () => {};
          resolve(Number(match[1]));
        } else if (this.#exited) {
          clearTimeout(timer);
          this.#wake = () => {};
          reject(new Error(`exited before its ready line\n${this.tail}`));
        }
      };
      this.#wake();
    });
  }

  /** SIGTERM, then SIGKILL after a grace period; says how it ended. */
  async stop(): Promise<string> {
    await this.child.stdin.close().catch(() => {});
    const wasRunning = !this.#exited;
    if (wasRunning) this.#signal("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        this.#signal("SIGKILL");
        resolve(true);
      }, STOP_TIMEOUT_MS);
    });
    const forced = await Promise.race([this.status.then(() => false), killed]);
    clearTimeout(timer);
    const status = await this.status;
    // A grandchild may hold the pipes a moment longer: then stop reading.
    const pumpTimer = setTimeout(
      () => this.#readers.forEach((r) => r.cancel().catch(() => {})),
      2_000,
    );
    await Promise.all(this.#pumps);
    clearTimeout(pumpTimer);
    if (!wasRunning) return `had exited (code ${status.code})`;
    return forced ? "killed after ignoring SIGTERM" : `exit ${status.code}`;
  }

  #signal(signal: Deno.Signal): void {
    try {
      this.child.kill(signal);
    } catch {
      // already gone
    }
  }
}
