// Benchmark peer: Node's `http` module answering every request with the same
// 25-byte body as recipe 2_4, and `Connection: close`, so each connection
// carries one request (as under `wrk -H "Connection: close"`).
//
//     node bench/peers/node_http.mjs --port=8080
//     curl http://127.0.0.1:8080/
//
// It prints `Listening on 127.0.0.1:<port>` once it accepts connections.
import http from "node:http";

const BODY = Buffer.from("\nHello from Epoll Server!");
const portArg = process.argv.find((a) => a.startsWith("--port="));
const port = Number(portArg ? portArg.slice("--port=".length) : 0);

const server = http.createServer((_req, res) => {
  res.shouldKeepAlive = false;
  res.writeHead(200, {
    "Content-Type": "text/plain",
    "Content-Length": BODY.length,
    Connection: "close",
  });
  res.end(BODY);
});
server.on("connection", (socket) => socket.setNoDelay(true));
server.listen(port, "127.0.0.1", () => {
  console.log(`Listening on 127.0.0.1:${server.address().port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
