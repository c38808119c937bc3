/** How backy decides where it runs from (source, bundle, compiled binary). */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { PERMISSIONS, RUN_FLAGS, runModeOf, selfCommand, V8_FLAGS } from "../../src/util/entry.ts";
import { MOD } from "../helpers.ts";

Deno.test("runModeOf: source checkout, bundle, compiled binary", () => {
  assertEquals(runModeOf("file:///srv/backy/src/util/entry.ts", false), "source");
  assertEquals(runModeOf("file:///usr/local/bin/backy.js", false), "bundle");
  assertEquals(runModeOf("file:///usr/local/bin/backy", false), "bundle");
  assertEquals(runModeOf("file:///tmp/deno-compile-backy/src/util/entry.ts", true), "binary");
});

Deno.test("selfCommand from source: deno run with backy's permissions on mod.ts; BACKY_CMD wins", () => {
  const saved = Deno.env.get("BACKY_CMD");
  try {
    Deno.env.delete("BACKY_CMD");
    assertEquals(selfCommand(), [
      Deno.execPath(),
      "run",
      "--quiet",
      ...PERMISSIONS,
      "--v8-flags=--max-semi-space-size=1",
      MOD,
    ]);
    assertEquals(RUN_FLAGS.slice(-2), [...PERMISSIONS, ...V8_FLAGS]);
    Deno.env.set("BACKY_CMD", "/opt/backy/bin/backy");
    assertEquals(selfCommand(), ["/opt/backy/bin/backy"]);
  } finally {
    if (saved === undefined) Deno.env.delete("BACKY_CMD");
    else Deno.env.set("BACKY_CMD", saved);
  }
  // The bundle resolves nothing at run time: no config, lock, npm or remote modules.
  for (const f of ["--no-config", "--no-lock", "--no-remote", "--no-npm"]) {
    assertEquals(RUN_FLAGS.includes(f), true, f);
  }
  // Deno refuses /dev and /proc to anything less (docs/permissions.md; artifact_test.ts
  // backs up and restores a block device through the artifact).
  assertEquals(PERMISSIONS, ["--allow-all"]);
});
