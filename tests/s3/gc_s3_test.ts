/**
 * Garbage collection of a shared bucket while other hosts back up (docs/s3.md): a real
 * gateway, real `backy` processes as the other hosts, the collector's steps run here.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { backy, randomBytes, tempDir } from "../helpers.ts";
import { sha256 } from "../../src/util/bytes.ts";
import { hex } from "../../src/repo/index_file.ts";
import { S3Client } from "../../src/store/s3_client.ts";
import { type GcStep, gcStep } from "../../src/store/s3_gc.ts";
import {
  deleteObject,
  type Gateway,
  gateway,
  listKeys,
  newBucket,
  putObject,
  s3Test,
} from "./rgw.ts";

const MiB = 1024 * 1024;
const gw = await gateway();

async function initJob(g: Gateway, dir: string, image: string, bucket: string, host: string) {
  const r = await backy(["-b", dir, "init", "--backend", "s3", "--bucket", bucket, "file", image], {
    env: g.env,
  });
  assertEquals(r.code, 0, r.stderr);
  const cfg = YAML.parse(await Deno.readTextFile(join(dir, "config")));
  cfg.s3.host = host;
  await Deno.writeTextFile(join(dir, "config"), YAML.stringify(cfg), { mode: 0o600 });
}

function collector(g: Gateway, bucket: string) {
  const client = new S3Client({
    endpoint: g.endpoint,
    bucket,
    region: "us-east-1",
    accessKeyId: g.accessKeyId,
    secretAccessKey: g.secretAccessKey,
    attempts: 3,
  });
  return (): Promise<GcStep> =>
    gcStep(client, { host: "gc-host", leaseTtl: 30, grace: 1, interval: 1 });
}

const chunk = (block: Uint8Array) => {
  const h = hex(sha256(block));
  return `chunks/${h.slice(0, 2)}/${h}`;
};

async function chunkSet(g: Gateway, bucket: string): Promise<Set<string>> {
  return new Set((await listKeys(g, bucket, "chunks/")).map((o) => o.key));
}

/** Backs up `blocks` as job `name`, then drops its metadata from the bucket (garbage). */
async function garbage(g: Gateway, dir: string, bucket: string, blocks: Uint8Array[]) {
  const img = join(dir, "garbage.img");
  const data = new Uint8Array(blocks.length * 4 * MiB);
  blocks.forEach((b, i) => data.set(b, i * 4 * MiB));
  await Deno.writeFile(img, data);
  await initJob(g, join(dir, "gone"), img, bucket, "gone-host");
  const r = await backy(["-b", join(dir, "gone"), "backup", "manual:x"], { env: g.env });
  assertEquals(r.code, 0, r.stderr);
  for (const o of await listKeys(g, bucket, "jobs/gone/")) await deleteObject(g, bucket, o.key);
  await new Promise((r) => setTimeout(r, 2100)); // older than the 1 s grace period
}

function blocks(n: number, seed: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => randomBytes(4 * MiB, seed + i));
}

async function restoreEquals(g: Gateway, dir: string, expected: Uint8Array) {
  const out = join(dir, "..", `restored-${crypto.randomUUID()}`);
  const r = await backy(["-b", dir, "restore", out], { env: g.env });
  assertEquals(r.code, 0, r.stderr);
  const got = await Deno.readFile(out);
  await Deno.remove(out);
  assertEquals(got.length, expected.length);
  assert(got.every((b, i) => b === expected[i]), "restored bytes differ");
}

s3Test(
  gw,
  "s3 gc: a collection during another host's backup deletes nothing it reuses",
  async (g) => {
    const dir = await tempDir();
    try {
      const bucket = await newBucket(g, "gc");
      const reused = blocks(3, 100), lost = blocks(1, 200);
      await garbage(g, dir, bucket, [...reused, ...lost]);
      // The other host: the garbage's first three blocks, then 80 MiB of new data.
      const data = new Uint8Array(92 * MiB);
      reused.forEach((b, i) => data.set(b, i * 4 * MiB));
      data.set(randomBytes(80 * MiB, 300), 12 * MiB);
      await Deno.writeFile(join(dir, "vm.img"), data);
      await initJob(g, join(dir, "vm"), join(dir, "vm.img"), bucket, "host-b");
      const child = backy(["-b", join(dir, "vm"), "backup", "manual:x"], { env: g.env });
      const step = collector(g, bucket);
      const deadline = Date.now() + 30_000;
      while ((await listKeys(g, bucket, "leases/vm")).length === 0) {
        assert(Date.now() < deadline, "the backup never took its lease");
        await new Promise((r) => setTimeout(r, 20));
      }
      const first = await step();
      assertEquals([first.step, first.condemned, first.waiting], ["condemned", 4, 1]);
      // The sweep waits until the backup's lease is gone, i.e. until it has published.
      let sweep: GcStep;
      while (true) {
        sweep = await step();
        if (sweep.step === "swept") break;
        assert(sweep.step === "waiting" || sweep.step === "busy", sweep.step);
        assert(Date.now() < deadline + 60_000, "the sweep never ran");
      }
      const published = (await listKeys(g, bucket, "jobs/vm/")).map((o) => o.key);
      assert(published.some((k) => k.endsWith(".rev")), "swept before the backup published");
      const r = await child;
      assertEquals(r.code, 0, r.stderr);
      assertEquals(sweep.removed, 1);
      const left = await chunkSet(g, bucket);
      for (const b of reused) assert(left.has(chunk(b)), "a reused chunk was deleted");
      assert(!left.has(chunk(lost[0])), "unreferenced garbage stays");
      await restoreEquals(g, join(dir, "vm"), data);
      assertEquals((await step()).step, "nothing");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

s3Test(gw, "s3 gc: a backup that starts after the list is out keeps what it reuses", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g, "gc");
    const reused = blocks(2, 400), lost = blocks(2, 500);
    await garbage(g, dir, bucket, [...reused, ...lost]);
    // A writer on another host, in flight since before the list: the sweep waits for it.
    const now = Date.now();
    const lease = {
      id: "w1",
      host: "host-z",
      pid: 1,
      op: "backup",
      started: now,
      expires: now + 600_000,
    };
    await putObject(g, bucket, "leases/slow", new TextEncoder().encode(JSON.stringify(lease)));
    const step = collector(g, bucket);
    const first = await step();
    assertEquals([first.step, first.condemned, first.waiting], ["condemned", 4, 1]);

    // A backup beginning now reads the list and protects the condemned chunks it reuses.
    const data = new Uint8Array(88 * MiB);
    reused.forEach((b, i) => data.set(b, i * 4 * MiB));
    data.set(randomBytes(80 * MiB, 600), 8 * MiB);
    await Deno.writeFile(join(dir, "late.img"), data);
    await initJob(g, join(dir, "late"), join(dir, "late.img"), bucket, "host-l");
    const child = backy(["-b", join(dir, "late"), "backup", "manual:x"], { env: g.env });
    const deadline = Date.now() + 30_000;
    while ((await listKeys(g, bucket, "gc/")).filter((o) => o.key.includes("/keep/")).length < 2) {
      assert(Date.now() < deadline, "no keep markers");
      await new Promise((r) => setTimeout(r, 20));
    }
    // The slow writer ends; the sweep runs while the late backup is still copying.
    await deleteObject(g, bucket, "leases/slow");
    const sweep = await step();
    const r = await child;
    assertEquals(r.code, 0, r.stderr);
    assertEquals([sweep.step, sweep.removed], ["swept", 2]);
    const left = await chunkSet(g, bucket);
    for (const b of reused) assert(left.has(chunk(b)), "a protected chunk was deleted");
    for (const b of lost) assert(!left.has(chunk(b)), "unprotected garbage stays");
    assertEquals((await listKeys(g, bucket, "gc/")).map((o) => o.key), ["gc/last"]);
    await restoreEquals(g, join(dir, "late"), data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
