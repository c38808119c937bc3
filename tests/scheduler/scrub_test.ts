/**
 * Scheduled scrubbing (issue 9) with the real daemon and second-scale periods: every stored
 * revision is read again within `verify-every` (coverage), a rotten chunk is found and
 * reported by `check`, and the job heals: the next backup stores the chunk anew and the
 * next scrubs trust the revisions again.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { backy, chunkOf, corrupt, randomBytes, tempDir } from "../helpers.ts";
import {
  Daemon,
  freePort,
  readStatus,
  shell,
  type TestConfig,
  waitFor,
  writeConfig,
} from "./harness.ts";

const MiB = 1024 * 1024;

/** verified_at (or undefined) of every complete revision of a job. */
async function verifiedAt(job: string): Promise<Map<string, string | undefined>> {
  const out = new Map<string, string | undefined>();
  for (const e of Deno.readDirSync(job)) {
    if (!e.isFile || !e.name.endsWith(".rev")) continue;
    const raw = YAML.parse(await Deno.readTextFile(join(job, e.name)).catch(() => "{}")) ?? {};
    if (typeof raw.stats?.duration !== "number") continue;
    out.set(String(raw.uuid), raw.verified_at ? String(raw.verified_at) : undefined);
  }
  return out;
}

Deno.test({
  name: "scheduled scrub: coverage within verify-every, damage reported by check, then healed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await tempDir("backy-scrub-");
    const base = join(dir, "base");
    await Deno.mkdir(base);
    const src = join(dir, "vm.img");
    // Block 0 never changes (shared by every revision); block 1 changes now and then.
    const block0 = randomBytes(4 * MiB, 71);
    await Deno.writeFile(src, new Uint8Array([...block0, ...randomBytes(4 * MiB, 72)]));
    const configFile = join(dir, "backy.conf");
    const port = freePort();
    const config: TestConfig = {
      global: {
        "base-dir": base,
        "status-interval": 1,
        "telnet-addrs": "127.0.0.1",
        "telnet-port": port,
        "verify-every": "16s",
      },
      schedules: { quick: { q: { interval: "6s", keep: 20 } } },
      jobs: {
        vm: { schedule: "quick", backend: "chunked", source: { type: "file", filename: src } },
      },
    };
    await writeConfig(configFile, config);
    const daemon = Daemon.start(configFile, join(dir, "scheduler.log"));
    const context = () => daemon.diagnostics();
    const job = join(base, "vm");
    try {
      // Coverage: every complete revision has been read again by a scrub.
      await waitFor("three revisions, all verified by a scrub", async () => {
        const v = await verifiedAt(job);
        return v.size >= 3 && [...v.values()].every((t) => t !== undefined);
      }, { context, timeoutMs: 60_000 });
      // (The SLA of a 6 s schedule may be missed on a loaded machine: only the scrub's part.)
      const ok = await backy(["check", "-c", configFile]);
      assert.ok(!/distrusted|scrub overdue|unreadable/.test(ok.stdout), ok.stdout);
      assert.match(await daemon.log(), /Scrub done job=vm/);

      // Rot in the chunk every revision shares, while the source is away (so no backup reads
      // and heals it first): a scrub finds it, check says so.
      await Deno.rename(src, `${src}.away`);
      await waitFor("a failed backup", async () => {
        const e = (await readStatus(join(base, "status"))).find((x) => x.job === "vm");
        return Number(e?.failures) >= 1;
      }, { context, timeoutMs: 30_000 });
      await corrupt(chunkOf(job, block0), 1000, new Uint8Array([1, 2, 3, 4]));
      const warned = await waitFor("check reports distrusted revisions", async () => {
        const r = await backy(["check", "-c", configFile]);
        return r.code >= 1 && r.stdout.includes("distrusted") ? r : undefined;
      }, { context, timeoutMs: 60_000 });
      assert.match(warned.stdout, /\nvm: \d+ distrusted revisions?\n/);
      assert.match(await daemon.log(), /ERROR vm: scrub found damage or failed/);

      // Healed: the chunk was moved aside, a backup stored it anew, scrubs trust again.
      await Deno.rename(`${src}.away`, src);
      await shell(port, ["run vm"]); // no waiting out the failure's backoff
      await waitFor("no distrusted revision left", async () => {
        const e = (await readStatus(join(base, "status"))).find((x) => x.job === "vm");
        return e !== undefined && Number(e.distrusted) === 0;
      }, { context, timeoutMs: 90_000 });
      const healed = await backy(["check", "-c", configFile]);
      assert.ok(!/distrusted|scrub overdue|unreadable/.test(healed.stdout), healed.stdout);
    } finally {
      await daemon.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
