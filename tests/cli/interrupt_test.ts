/**
 * Black-box: Ctrl-C / SIGTERM of a foreground command says what it stopped and exits
 * 130 / 143; `restore -` refuses to write an image to a terminal (a real pty via `script`).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { backedUpJob, fileExists, MOD, sh, spawnBacky, tempDir } from "../helpers.ts";
import { delay, waitFor } from "../scheduler/harness.ts";

const hasFlock = (await sh("flock", ["--version"]).catch(() => ({ code: 1 }))).code === 0;

Deno.test({
  name: `an interrupted restore names itself and exits 128+signal${
    hasFlock ? "" : " (ignored: needs flock, Debian package util-linux)"
  }`,
  ignore: !hasFlock,
  fn: async () => {
    const dir = await tempDir();
    try {
      const { job } = await backedUpJob(dir, [5, 0, 6], "chunked");
      for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
        // An expire holding the exclusive lock: restore waits for its shared lock.
        const holder = new Deno.Command("flock", {
          args: ["-x", join(job, ".purge"), "sleep", "30"],
        }).spawn();
        const out = join(dir, `out-${signal}`);
        const restore = spawnBacky(["-b", job, "restore", out]);
        try {
          // Waiting for the lock once it has the lock file open (its handlers are set by then).
          await waitFor("restore to open the lock file", async () => {
            for await (const fd of Deno.readDir(`/proc/${restore.pid}/fd`)) {
              const target = await Deno.readLink(`/proc/${restore.pid}/fd/${fd.name}`).catch(() =>
                ""
              );
              if (target === join(job, ".purge")) return true;
            }
            return false;
          });
          await delay(100);
          restore.kill(signal);
          const r = await restore.output();
          const stderr = new TextDecoder().decode(r.stderr);
          assertEquals({ code: r.code, stderr }, {
            code,
            stderr: `Interrupted: restore from ${job} to ${out} stopped by ${signal}\n`,
          });
          assertEquals(await fileExists(out), false, "no target written");
        } finally {
          holder.kill("SIGKILL");
          await holder.status;
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const hasScript = (await sh("script", ["--version"]).catch(() => ({ code: 1 }))).code === 0;

Deno.test({
  name: `restore - refuses a terminal as stdout${
    hasScript ? "" : " (ignored: needs script, Debian package bsdutils)"
  }`,
  ignore: !hasScript,
  fn: async () => {
    const dir = await tempDir();
    try {
      const { job } = await backedUpJob(dir, [5], "chunked");
      // `script` runs the command on a new pseudo-terminal and exits with its status.
      const cmd = `${Deno.execPath()} run --allow-all --quiet ${MOD} -b ${job} restore -`;
      const r = await sh("script", ["-qec", cmd, "/dev/null"]);
      assertEquals(r.code, 1, r.out);
      assert(
        r.out.includes(
          "Error: restore -: refusing to write a disk image to a terminal; redirect stdout " +
            "to a file or pipe it into a command",
        ),
        r.out,
      );
      assert(r.out.length < 400, `nothing but the error on the terminal: ${r.out.length} bytes`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
