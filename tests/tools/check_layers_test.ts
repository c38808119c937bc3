// The layer check (tools/check_layers.ts): its rules on small graphs, and the real tree.
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { cycles, type Edge, importsOf, problems, rankOf } from "../../tools/check_layers.ts";
import { ROOT } from "../helpers.ts";

const e = (from: string, to: string, typeOnly = false): Edge => ({ from, to, typeOnly });

Deno.test("importsOf: value, type-only, re-exports, multi-line and Worker entries", () => {
  const text = `import { a } from "./a.ts";
import type { B } from "../repo/b.ts";
import {
  c,
  type D,
} from "./c.ts";
export { e } from "./e.ts";
export type { F } from "./f.ts";
import "./side.ts";
import * as fs from "node:fs";
const w = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
const m = new URL("../../mod.ts", import.meta.url);
if (x) await import("../backup/worker.ts");
`;
  assertEquals(importsOf(text), [
    { spec: "./a.ts", typeOnly: false },
    { spec: "../repo/b.ts", typeOnly: true },
    { spec: "./c.ts", typeOnly: false },
    { spec: "./e.ts", typeOnly: false },
    { spec: "./f.ts", typeOnly: true },
    { spec: "./side.ts", typeOnly: false },
    { spec: "../backup/worker.ts", typeOnly: false },
    { spec: "./worker.ts", typeOnly: false },
  ]);
});

Deno.test("rankOf: folders under src/ and mod.ts; unknown folders have none", () => {
  assertEquals(rankOf("src/util/fs.ts"), 0);
  assertEquals(rankOf("src/cli/main.ts"), 7);
  // mount/ reads through backup/'s Workers; only cli/ uses it, beside the daemon's front ends.
  assertEquals(rankOf("src/mount/mount.ts"), 5);
  assertEquals(rankOf("src/mount/mount.ts")! > rankOf("src/backup/pool.ts")!, true);
  assertEquals(rankOf("src/mount/mount.ts")! < rankOf("src/cli/mount.ts")!, true);
  assertEquals(rankOf("mod.ts"), 100);
  assertEquals(rankOf("src/plugins/x.ts"), undefined);
});

Deno.test("problems: upward and sideways imports, unknown folders, value cycles only", () => {
  const modules = ["src/util/a.ts", "src/store/s.ts", "src/sources/f.ts", "src/nowhere/x.ts"];
  assertEquals(
    problems([
      e("src/store/s.ts", "src/util/a.ts"), // fine: downward
      e("src/util/a.ts", "src/store/s.ts"), // upward
      e("src/store/s.ts", "src/sources/f.ts"), // sideways: same rank
      e("src/store/s.ts", "src/store/t.ts"),
      e("src/store/t.ts", "src/store/s.ts", true), // a type-only cycle is fine
    ], modules),
    [
      "src/nowhere/x.ts: folder has no layer (add it to RANKS)",
      "src/util/a.ts imports src/store/s.ts: src/store is not below src/util",
      "src/store/s.ts imports src/sources/f.ts: src/sources is not below src/store",
      "import cycle: src/store/s.ts -> src/util/a.ts -> src/store/s.ts",
    ],
  );
});

Deno.test("cycles: finds each strongly connected component once, and self-imports", () => {
  assertEquals(
    cycles([e("a", "b"), e("b", "c"), e("c", "a"), e("c", "d"), e("d", "d"), e("x", "y")]),
    [["d"], ["a", "b", "c"]],
  );
});

Deno.test("the source tree has no import cycle and no upward import", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", `${ROOT}/tools/check_layers.ts`, ROOT],
    stdout: "piped",
    stderr: "piped",
  }).output();
  // Problems go to stderr, one per line; the summary to stdout.
  const problemLines = new TextDecoder().decode(out.stderr).split("\n").filter((l) => l);
  assertEquals({ code: out.code, problems: problemLines }, { code: 0, problems: [] });
  assertEquals(/no cycle, none upward/.test(new TextDecoder().decode(out.stdout)), true);
});
