import assert from "node:assert/strict";
import { join } from "node:path";
import { runHook } from "../../src/scheduler/callback.ts";
import { tempDir } from "../helpers.ts";

Deno.test("runHook: argv, stdin, output and exit code of a real program", async () => {
  const dir = await tempDir("backy-hook-");
  try {
    const out = join(dir, "stdin");
    const r = await runHook(
      "sh",
      ["-c", `cat > ${out}; echo "got $0"; exit 3`, "vm1"],
      "a: 1\n",
      5000,
    );
    assert.deepEqual(r, { timedOut: false, output: "got vm1", code: 3 });
    assert.equal(await Deno.readTextFile(out), "a: 1\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runHook: a program that ignores stdin, one that cannot start, one that hangs", async () => {
  const big = "x".repeat(1 << 20); // more than a pipe holds
  assert.deepEqual(await runHook("true", [], big, 5000), { timedOut: false, output: "", code: 0 });
  const missing = await runHook("/nonexistent/hook", [], "", 5000);
  assert.equal(missing.timedOut, false);
  assert.match(missing.spawnError ?? "", /No such file|not found/i);
  const started = Date.now();
  const hung = await runHook("sh", ["-c", "sleep 30 & sleep 30"], big, 500);
  assert.equal(hung.timedOut, true);
  assert.equal(hung.signal, "SIGTERM");
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
});
