/**
 * `--vs=book`: the book's own chapter-2 scripts, run from the reader's copy
 * named by BOOK_DIR, beside ours in the scenarios they can serve. Nothing of
 * the book is copied here: the scripts run from BOOK_DIR as they are.
 *
 * - 2_3 and 2_4 are servers with a `--port` argument: run as they are.
 * - 2_1 and 2_2 run a demo of two or three clients and exit, so they cannot
 *   be benchmarked as they are. Their server classes can:
 *   bench/book_server.py loads the script by path and serves the book's
 *   `ForkingServer` / `ThreadedTCPServer` with the book's handler on
 *   127.0.0.1, port 0, as the book's `main()` does, minus the demo clients.
 * - 2_5 needs diesel, which does not run on Python 3: skipped, saying so.
 */

import { helper } from "./proc.ts";
import type { ServerSpec } from "./servers.ts";

/** The book's scripts, by scenario. */
const FILES: Record<string, string> = {
  "2_1": "2_1_forking_mixin_socket_server.py",
  "2_2": "2_2_threading_mixin_socket_server.py",
  "2_3": "2_3_chat_server_with_select.py",
  "2_4": "2_4_simple_web_server_with_epoll.py",
  "2_5": "2_5_echo_server_with_diesel.py",
};

/** Which class and handler of the book's script the wrapper serves. */
const SERVE: Record<string, { server: string; handler: string }> = {
  "2_1": { server: "ForkingServer", handler: "ForkingServerRequestHandler" },
  "2_2": { server: "ThreadedTCPServer", handler: "ThreadedTCPRequestHandler" },
};

const LISTENING = /Listening on \S+:(\d+)/;

/** BOOK_DIR as the reader named it, made absolute against where they ran `deno task`. */
export function bookDir(): string | undefined {
  const dir = Deno.env.get("BOOK_DIR");
  if (!dir) return undefined;
  if (dir.startsWith("/")) return dir.replace(/\/+$/, "");
  const from = Deno.env.get("INIT_CWD") ?? Deno.cwd();
  return `${from}/${dir}`.replace(/\/+$/, "");
}

/**
 * Does python3 see `path` as a file? (bench/is_file.py: python3 runs the
 * script, so it looks; this process needs no read permission there.)
 */
async function pythonSees(path: string): Promise<boolean | "no python3"> {
  try {
    const { code } = await new Deno.Command("python3", {
      args: [helper("is_file.py"), path],
      stdout: "null",
      stderr: "null",
    }).output();
    return code === 0;
  } catch {
    return "no python3";
  }
}

/** The book's script for scenario `id` as a server to run, or why it is skipped. */
export async function bookSpec(
  id: string,
  dir: string | undefined,
): Promise<ServerSpec> {
  const file = FILES[id];
  const label = `${id} (book, Python)`;
  const skipped = (why: string): ServerSpec => ({
    label,
    kind: "book",
    command: [],
    skip: why,
  });
  if (id === "2_5") {
    return skipped(
      "diesel, which the book's 2_5 needs, does not run on Python 3",
    );
  }
  if (!file) return skipped("the book has no script for this scenario");
  if (!dir) return skipped("BOOK_DIR is not set (the book's scripts)");
  const path = `${dir}/${file}`;
  const seen = await pythonSees(path);
  if (seen === "no python3") return skipped("python3 is not installed");
  if (!seen) return skipped(`no ${file} in BOOK_DIR (${dir})`);
  const serve = SERVE[id];
  if (serve) {
    return {
      label,
      kind: "book",
      command: [
        "python3",
        helper("book_server.py"),
        path,
        serve.server,
        serve.handler,
      ],
      ready: LISTENING,
    };
  }
  // 2_3 and 2_4 take --port; they print no ready line with the port, so
  // "{port}" is a free port and the check's first connect waits for them.
  return {
    label,
    kind: "book",
    command: id === "2_3"
      ? ["python3", path, "--name=server", "--port={port}"]
      : ["python3", path, "--port={port}"],
  };
}
