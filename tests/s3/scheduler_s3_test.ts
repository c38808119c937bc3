/**
 * The scheduler with `global.s3` and a job on `backend: s3`: the real daemon writes the
 * job's config with the bucket settings (no secret) and its backup lands in the bucket.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { randomBytes, tempDir } from "../helpers.ts";
import { Daemon, readRevs, waitFor, writeConfig } from "../scheduler/harness.ts";
import { gateway, listKeys, newBucket, s3Test } from "./rgw.ts";

const gw = await gateway();

s3Test(
  gw,
  "scheduler: an s3 job gets the bucket settings and backs up into the bucket",
  async (g) => {
    const dir = await tempDir();
    let daemon: Daemon | undefined;
    try {
      const bucket = await newBucket(g, "sched");
      const creds = join(dir, "s3-credentials");
      await Deno.writeTextFile(
        creds,
        `[default]\naws_access_key_id = ${g.accessKeyId}\naws_secret_access_key = ${g.secretAccessKey}\n`,
        { mode: 0o600 },
      );
      await Deno.mkdir(join(dir, "base"), { mode: 0o700 });
      await Deno.writeFile(join(dir, "img"), randomBytes(6 * 1024 * 1024, 5));
      const config = join(dir, "backy.conf");
      await writeConfig(config, {
        global: {
          "base-dir": join(dir, "base"),
          "telnet-addrs": "",
          s3: { bucket, endpoint: g.endpoint, "credentials-file": creds, host: "sched-host" },
        },
        schedules: { default: { weekly: { interval: "1w", keep: 2 } } },
        jobs: {
          vm1: {
            schedule: "default",
            backend: "s3",
            source: { type: "file", filename: join(dir, "img") },
          },
        },
      });
      daemon = Daemon.start(config, join(dir, "scheduler.log"));
      const revs = await waitFor(
        "a complete revision",
        async () => {
          const done = (await readRevs(join(dir, "base", "vm1"))).filter((r) => r.complete);
          return done.length ? done : undefined;
        },
        { timeoutMs: 60_000, context: () => daemon!.diagnostics() },
      );
      assertEquals(revs.length, 1);
      const cfg = YAML.parse(await Deno.readTextFile(join(dir, "base", "vm1", "config")));
      assertEquals(cfg.backend, "s3");
      assertEquals(cfg.s3, {
        bucket,
        endpoint: g.endpoint,
        "credentials-file": creds,
        host: "sched-host",
        job: "vm1",
      });
      const keys = (await listKeys(g, bucket, "jobs/vm1/")).map((o) => o.key);
      assert(keys.includes(`jobs/vm1/${revs[0].id}.rev`), keys.join(","));
      const log = await daemon.log();
      assert(!log.includes(g.secretAccessKey));
    } finally {
      await daemon?.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
