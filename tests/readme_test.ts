import { assert, assertEquals } from "@std/assert";
import { ROOT } from "./harness.ts";
import {
  missingPeer,
  normalize,
  README_FILES,
  SESSIONS,
  transcriptBlocks,
} from "./transcripts.ts";

const readmes = await Promise.all(
  README_FILES.map(async (file) => ({
    file,
    text: await Deno.readTextFile(new URL(file, ROOT)),
  })),
);
const tasks: Record<string, string> = JSON.parse(
  await Deno.readTextFile(new URL("deno.json", ROOT)),
).tasks;

for (const { file, text } of readmes) {
  Deno.test(`${file}: every 'deno task' it shows exists in deno.json`, () => {
    const named = [...text.matchAll(/deno task\s+([\w-]+)/g)].map((m) => m[1]);
    assert(named.length > 0, "the README shows no task at all");
    for (const task of named) {
      assert(task in tasks, `no task '${task}' in deno.json`);
    }
  });

  Deno.test(`${file}: every file its commands run exists`, async () => {
    const runs = [
      ...text.matchAll(/deno (?:run|test)[^\n`]*?([\w/.-]+\.ts)\b/g),
    ];
    const linked = [...text.matchAll(/\]\(([\w/.-]+\.(?:ts|md|svg))\)/g)];
    for (const [, path] of [...runs, ...linked]) {
      const stat = await Deno.stat(new URL(path, ROOT)).catch(() => null);
      assert(stat?.isFile, `${file} names ${path}, which does not exist`);
    }
  });

  Deno.test(`${file}: links the other README at the top`, () => {
    const other = README_FILES.find((f) => f !== file)!;
    assert(text.split("\n").slice(0, 5).join("\n").includes(`](${other})`));
  });
}

for (const [name, session] of Object.entries(SESSIONS)) {
  const missing = missingPeer(name);
  if (missing) console.warn(`skipping the ${name} transcript: ${missing}`);
  Deno.test({
    name: `READMEs: the ${name} transcript is what the script prints now`,
    ignore: missing !== undefined,
    fn: async () => {
      const fresh = normalize(await session());
      for (const { file, text } of readmes) {
        const shown = transcriptBlocks(text).get(name);
        if (shown === undefined) {
          throw new Error(`${file} has no '${name}' block`);
        }
        assertEquals(
          normalize(shown.trimEnd()),
          fresh,
          `${file}'s ${name} transcript is stale: run 'deno task transcripts'`,
        );
      }
    },
  });
}
