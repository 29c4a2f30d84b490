/**
 * 2_1's scenario: the forking server (a Deno process per connection) under
 * one connection after another, at concurrency 1 and 10, then 40 connections
 * held open, one handler process each. The shape is 2_2's too (one_shot.ts).
 */

import { oneShotScenario } from "../one_shot.ts";

export const forking = oneShotScenario(
  "2_1",
  "2_1_forking_mixin_socket_server.ts",
  "2_1 forking server: a process per connection",
  true,
);
