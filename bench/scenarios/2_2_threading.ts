/**
 * 2_2's scenario: the threading server (a Worker per connection) under one
 * connection after another, at concurrency 1 and 10, then 40 connections held
 * open, one Worker each. The shape is 2_1's too (one_shot.ts).
 */

import { oneShotScenario } from "../one_shot.ts";

export const threading = oneShotScenario(
  "2_2",
  "2_2_threading_mixin_socket_server.ts",
  "2_2 threading server: a Worker per connection",
  false,
);
