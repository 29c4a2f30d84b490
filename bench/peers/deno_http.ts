/**
 * Benchmark peer: the smallest Deno HTTP server that writes the same bytes as
 * recipe 2_4 (the book's fixed response plus `Connection: close`, which 2_4
 * adds because it closes after one response), one request per connection.
 *
 *     deno run --allow-net=127.0.0.1 bench/peers/deno_http.ts --port=8080
 *     curl http://127.0.0.1:8080/
 *
 * Deno.listen, read until the blank line ends the request head, write the
 * response, close: nothing more, so it shows what the runtime itself costs.
 * It prints `Listening on 127.0.0.1:<port>` once it accepts connections.
 */

const RESPONSE = new TextEncoder().encode(
  "HTTP/1.1 200 OK\r\nDate: Mon, 1 Apr 2013 01:01:01 GMT\r\n" +
    "Content-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\n" +
    "\nHello from Epoll Server!",
);
const MAX_HEAD_BYTES = 8 * 1024;

/** Has the request head ended ("\n\n" or "\n\r\n", as the book checks)? */
function headEnded(head: Uint8Array, length: number): boolean {
  for (let i = 1; i < length; i++) {
    if (head[i] !== 0x0a) continue;
    if (head[i - 1] === 0x0a) return true;
    if (head[i - 1] === 0x0d && i >= 2 && head[i - 2] === 0x0a) return true;
  }
  return false;
}

async function serve(conn: Deno.Conn): Promise<void> {
  const head = new Uint8Array(MAX_HEAD_BYTES);
  let length = 0;
  try {
    while (length < head.length) {
      const n = await conn.read(head.subarray(length));
      if (n === null) return;
      length += n;
      if (headEnded(head, length)) {
        let rest = RESPONSE;
        while (rest.length > 0) rest = rest.subarray(await conn.write(rest));
        return;
      }
    }
  } catch {
    // a reset client: nothing to do but close
  } finally {
    conn.close();
  }
}

if (import.meta.main) {
  const arg = Deno.args.find((a) => a.startsWith("--port="));
  const port = Number(arg?.slice("--port=".length) ?? "0");
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const stop = () => {
    listener.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  console.log(`Listening on 127.0.0.1:${listener.addr.port}`);
  while (true) {
    try {
      const conn = await listener.accept();
      conn.setNoDelay(true);
      serve(conn);
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) break;
    }
  }
}
