/**
 * Progress reports of a real process: log lines at the configured interval without a
 * terminal, `.progress` (0600, whole JSON records, removed at the end), and the live line on
 * a real pseudo-terminal (`script`).
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import { listDir, sh, tempDir } from "../helpers.ts";
import { delay } from "../scheduler/harness.ts";

const DRIVER = new URL("./progress_driver.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;

Deno.test("without a terminal: log lines every interval, .progress for the scheduler", async () => {
  const dir = await tempDir();
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", DRIVER, dir, "200"],
      env: { BACKY_PROGRESS_INTERVAL: "0.5" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Read `.progress` while it runs: always a whole record, owner-only.
    const seen: Record<string, unknown>[] = [];
    let running = true;
    const status = child.output().finally(() => (running = false));
    while (running) {
      try {
        const path = join(dir, ".progress");
        const text = await Deno.readTextFile(path);
        assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
        seen.push(JSON.parse(text));
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      await delay(50);
    }
    const out = await status;
    assertEquals(new TextDecoder().decode(out.stdout), "done\n");
    assert(seen.length > 5, `read .progress ${seen.length} times`);
    const now = Date.now() / 1000;
    for (const r of seen) {
      assertEquals(Object.keys(r).sort(), [
        "command",
        "done",
        "eta",
        "phase",
        "pid",
        "rate",
        "total",
        "updated",
      ]);
      assertEquals(r.pid, child.pid);
      assertEquals(r.command, "backup");
      assert(r.phase === "copying" || r.phase === "verifying");
      assertEquals(r.total, r.phase === "copying" ? 64 * MiB : 32 * MiB);
      assert(typeof r.updated === "number" && Math.abs(now - r.updated) < 10);
    }
    // Rewritten while copying (done grows), and the verifying phase was seen too.
    const copying = seen.filter((r) => r.phase === "copying").map((r) => r.done as number);
    assert(new Set(copying).size >= 2, `done advanced: ${copying}`);
    assert(seen.some((r) => r.phase === "verifying"));
    const moving = seen.filter((r) => (r.rate as number) > 0);
    assert(moving.every((r) => r.eta === null || typeof r.eta === "number"));
    assert(moving.some((r) => typeof r.eta === "number"), "an ETA once a rate is known");
    assertEquals(await listDir(dir), [], ".progress removed, no temp files left");

    // One log line per 0.5 s over ~4.8 s, on stderr (no terminal), nothing else there.
    const lines = new TextDecoder().decode(out.stderr).trimEnd().split("\n");
    assert(lines.length >= 7 && lines.length <= 10, `log lines: ${lines.join("\n")}`);
    for (const l of lines) {
      assertMatch(
        l,
        /^Progress: backup (copying|verifying) +\d+\.\d% [\d.]+ (MiB|Bytes) of (64|32)\.00 MiB, [\d.]+ (MiB|kiB|Bytes)\/s, ETA (\d+:\d\d:\d\d|-)$/,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const hasScript = (await sh("script", ["--version"]).catch(() => ({ code: 1 }))).code === 0;

Deno.test({
  name: `on a terminal: a live line redrawn in place, cleared at the end${
    hasScript ? "" : " (ignored: needs script, Debian package bsdutils)"
  }`,
  ignore: !hasScript,
  fn: async () => {
    const dir = await tempDir();
    try {
      const cmd = `${Deno.execPath()} run --allow-all --quiet ${DRIVER} ${dir} 100`;
      const r = await sh("script", ["-qec", cmd, "/dev/null"]);
      assertEquals(r.code, 0, r.out);
      // Redrawn in place: carriage returns / cursor moves, no log lines in between.
      const redraws = r.out.split("backup copying").length - 1;
      assert(redraws >= 3, `redrawn ${redraws} times:\n${JSON.stringify(r.out)}`);
      assert(r.out.includes("backup verifying"), "the second phase is shown");
      assertMatch(
        r.out,
        /backup copying +\d+\.\d% [\d.]+ MiB of 64\.00 MiB, [\d.]+ MiB\/s, ETA 0:00:0\d/,
      );
      assert(!r.out.includes("Progress:"), "no log lines on a terminal");
      assert(
        r.out.includes("\x1b[2K") || r.out.includes("\x1b[0K") || r.out.includes("\x1b[K"),
        "line cleared",
      );
      assert(r.out.trimEnd().endsWith("done"), "ends with the program's own output");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
