// Benchmark peer: Node's `net` module as a line echo server that answers
// exactly like recipe 2_5: each line ("\n"-terminated) comes back as
// "You said: <line>".
//
//     node bench/peers/node_net_echo.mjs --port=8800
//     nc 127.0.0.1 8800
//
// Replies to every whole line in one chunk go out in one write, which is what
// an idiomatic Node server does. Lines are bounded at 64 KiB, as in 2_5.
// It prints `Listening on 127.0.0.1:<port>` once it accepts connections.
import net from "node:net";

const YOU_SAID = Buffer.from("You said: ");
const MAX_LINE_BYTES = 64 * 1024;
const portArg = process.argv.find((a) => a.startsWith("--port="));
const port = Number(portArg ? portArg.slice("--port=".length) : 0);

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    const data = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    const replies = [];
    let start = 0;
    let newline;
    while ((newline = data.indexOf(0x0a, start)) >= 0) {
      replies.push(YOU_SAID, data.subarray(start, newline + 1));
      start = newline + 1;
    }
    pending = data.subarray(start);
    if (replies.length) socket.write(Buffer.concat(replies));
    if (pending.length > MAX_LINE_BYTES) socket.destroy();
  });
  socket.on("end", () => {
    if (pending.length) socket.write(Buffer.concat([YOU_SAID, pending]));
    socket.end();
  });
  socket.on("error", () => socket.destroy());
});
server.listen(port, "127.0.0.1", () => {
  console.log(`Listening on 127.0.0.1:${server.address().port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
