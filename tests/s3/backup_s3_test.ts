/**
 * The s3 store end to end against a real gateway (Ceph RGW, tests/s3/rgw.ts): the real
 * `backy` command in real job directories, several processes at once as separate hosts.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { backy, editRevText, patchFile, randomBytes, tempDir } from "../helpers.ts";
import {
  type Gateway,
  gateway,
  getObject,
  listKeys,
  newBucket,
  ownGateway,
  putObject,
  s3Test,
} from "./rgw.ts";

const MiB = 1024 * 1024;
const gw = await gateway();

/** Adds keys to a job's `s3:` mapping (e.g. the host name a simulated host uses). */
async function setS3(dir: string, extra: Record<string, unknown>) {
  const file = join(dir, "config");
  const cfg = YAML.parse(await Deno.readTextFile(file));
  cfg.s3 = { ...cfg.s3, ...extra };
  await Deno.writeTextFile(file, YAML.stringify(cfg), { mode: 0o600 });
}

async function initJob(g: Gateway, dir: string, image: string, bucket: string, host = "host-a") {
  const r = await backy(["-b", dir, "init", "--backend", "s3", "--bucket", bucket, "file", image], {
    env: g.env,
  });
  assertEquals(r.code, 0, r.stderr + r.stdout);
  await setS3(dir, { host });
}

async function ok(g: Gateway, args: string[]) {
  const r = await backy(args, { env: g.env });
  assertEquals(r.code, 0, `backy ${args.join(" ")}: ${r.stderr}${r.stdout}`);
  return r;
}

async function restoreBytes(g: Gateway, dir: string, rev: string): Promise<Uint8Array> {
  const out = join(dir, `..`, `restored-${rev}-${crypto.randomUUID()}`);
  await ok(g, ["-b", dir, "restore", "-r", rev, out]);
  const bytes = await Deno.readFile(out);
  await Deno.remove(out);
  return bytes;
}

function sameBytes(a: Uint8Array, b: Uint8Array, what: string) {
  assertEquals(a.length, b.length, `${what}: length`);
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      at = i;
      break;
    }
  }
  assertEquals(at, -1, `${what}: first difference at ${at}`);
}

/** 10 MiB of data: 2 random blocks, a zero block, a half block of text. */
function image(seed: number): Uint8Array {
  const out = new Uint8Array(10 * MiB + 123);
  out.set(randomBytes(8 * MiB, seed), 0);
  out.fill(0x61, 9 * MiB);
  return out;
}

async function statusJson(g: Gateway, dir: string) {
  return JSON.parse((await ok(g, ["-b", dir, "status", "--json"])).stdout);
}

const chunkKeys = async (g: Gateway, bucket: string) =>
  (await listKeys(g, bucket, "chunks/")).map((o) => o.key).sort();

s3Test(
  gw,
  "s3: backups and incrementals restore bit-exact; only changed blocks upload",
  async (g) => {
    const dir = await tempDir();
    try {
      const bucket = await newBucket(g);
      const img = join(dir, "img");
      const versions: Uint8Array[] = [image(1)];
      await Deno.writeFile(img, versions[0]);
      const job = join(dir, "job");
      await initJob(g, job, img, bucket);
      await ok(g, ["-b", job, "backup", "manual:one"]);
      const first = await chunkKeys(g, bucket);
      assertEquals(first.length, 3); // two random blocks + the text block; zeros are not stored

      await patchFile(img, 4 * MiB + 100, 4096, 7); // one block changes
      versions.push(await Deno.readFile(img));
      await ok(g, ["-b", job, "backup", "manual:two"]);
      const second = await chunkKeys(g, bucket);
      assertEquals(second.length, 4, "exactly one new chunk for one changed block");
      assert(first.every((k) => second.includes(k)));

      const f = await Deno.open(img, { write: true });
      await f.truncate(14 * MiB); // grows by a zero tail
      f.close();
      await patchFile(img, 0, 10, 9);
      versions.push(await Deno.readFile(img));
      await ok(g, ["-b", job, "backup", "manual:three"]);

      const revs = await statusJson(g, job);
      assertEquals(revs.length, 3);
      // Newest is 0: each revision restores to exactly the image it was taken from.
      for (let i = 0; i < 3; i++) {
        sameBytes(await restoreBytes(g, job, String(2 - i)), versions[i], `revision ${i}`);
      }
      // Each .rev and .index is in the bucket too.
      const meta = (await listKeys(g, bucket, "jobs/job/")).map((o) => o.key);
      for (const r of revs) {
        assert(meta.includes(`jobs/job/${r.id}.rev`), `${r.id}.rev in the bucket`);
        assert(meta.includes(`jobs/job/${r.id}.index`), `${r.id}.index in the bucket`);
      }
      assert(meta.includes("jobs/job/config"));
      // A chunk object is a chunk file of the chunked store: zstd frame magic.
      const obj = await getObject(g, bucket, first[0]);
      assertEquals([...obj!.subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd]);
      // No lease is left behind.
      assertEquals((await listKeys(g, bucket, "leases/")).length, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

s3Test(gw, "s3: two hosts back up jobs with shared content at once, deduplicated", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g);
    const shared = randomBytes(12 * MiB, 21);
    const a = new Uint8Array(16 * MiB), b = new Uint8Array(16 * MiB);
    a.set(shared, 0);
    a.set(randomBytes(4 * MiB, 22), 12 * MiB);
    b.set(shared, 4 * MiB); // the same blocks at other offsets
    b.set(randomBytes(4 * MiB, 23), 0);
    await Deno.writeFile(join(dir, "a.img"), a);
    await Deno.writeFile(join(dir, "b.img"), b);
    await initJob(g, join(dir, "vm-a"), join(dir, "a.img"), bucket, "host-a");
    await initJob(g, join(dir, "vm-b"), join(dir, "b.img"), bucket, "host-b");
    const [ra, rb] = await Promise.all([
      backy(["-b", join(dir, "vm-a"), "backup", "manual:x"], { env: g.env }),
      backy(["-b", join(dir, "vm-b"), "backup", "manual:x"], { env: g.env }),
    ]);
    assertEquals(ra.code, 0, ra.stderr + ra.stdout);
    assertEquals(rb.code, 0, rb.stderr + rb.stdout);
    // 3 shared + 1 own each: 5 chunks, not 8.
    assertEquals((await chunkKeys(g, bucket)).length, 5);
    sameBytes(await restoreBytes(g, join(dir, "vm-a"), "0"), a, "host a");
    sameBytes(await restoreBytes(g, join(dir, "vm-b"), "0"), b, "host b");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

s3Test(gw, "s3: a lost job directory is rebuilt from the bucket on a new host", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g);
    const img = join(dir, "img");
    await Deno.writeFile(img, image(31));
    const v0 = await Deno.readFile(img);
    await initJob(g, join(dir, "old"), img, bucket, "old-host");
    await ok(g, ["-b", join(dir, "old"), "backup", "manual:a"]);
    await patchFile(img, MiB, 8192, 32);
    const v1 = await Deno.readFile(img);
    await ok(g, ["-b", join(dir, "old"), "backup", "manual:b"]);
    const before = await statusJson(g, join(dir, "old"));
    await Deno.remove(join(dir, "old"), { recursive: true }); // the host is lost

    const fresh = join(dir, "new");
    await ok(g, ["-b", fresh, "init", "s3", `${bucket}/old`]);
    const after = await statusJson(g, fresh);
    assertEquals(
      after.map((r: { id: string; tags: string[] }) => [r.id, r.tags]),
      before.map((r: { id: string; tags: string[] }) => [r.id, r.tags]),
    );
    sameBytes(await restoreBytes(g, fresh, "1"), v0, "first revision on the new host");
    sameBytes(await restoreBytes(g, fresh, "0"), v1, "second revision on the new host");
    const cfg = YAML.parse(await Deno.readTextFile(join(fresh, "config")));
    assertEquals([cfg.type, cfg.filename, cfg.backend, cfg.s3.job], ["file", img, "s3", "old"]);
    assertEquals((await Deno.stat(join(fresh, "config"))).mode! & 0o777, 0o600);

    // The new host carries on: an incremental on top of the old host's revisions.
    await setS3(fresh, { host: "new-host" });
    await patchFile(img, 5 * MiB, 4096, 33);
    const v2 = await Deno.readFile(img);
    const r = await ok(g, ["-b", fresh, "backup", "manual:c"]);
    assert(r.stdout.includes(`parent=${before.at(-1).id}`), r.stdout);
    sameBytes(await restoreBytes(g, fresh, "0"), v2, "third revision");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

s3Test(gw, "s3: a job another host holds a live lease on is refused", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g);
    const img = join(dir, "img");
    await Deno.writeFile(img, image(41));
    await initJob(g, join(dir, "vm"), img, bucket, "host-a");
    const lease = {
      id: "other",
      host: "host-b",
      pid: 4242,
      op: "backup",
      started: Date.now(),
      expires: Date.now() + 600_000,
    };
    await putObject(g, bucket, "leases/vm", new TextEncoder().encode(JSON.stringify(lease)));
    const r = await backy(["-b", join(dir, "vm"), "backup", "manual:x"], { env: g.env });
    assertEquals(r.code, 1);
    assert(/held by host 'host-b' \(backup, pid 4242\)/.test(r.stderr), r.stderr);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertEquals((await statusJson(g, join(dir, "vm"))).length, 0);
    // Expired: taken over.
    lease.expires = Date.now() - 60_000;
    await putObject(g, bucket, "leases/vm", new TextEncoder().encode(JSON.stringify(lease)));
    await ok(g, ["-b", join(dir, "vm"), "backup", "manual:x"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

s3Test(gw, "s3: wrong credentials and a missing bucket give one clear error", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g);
    const img = join(dir, "img");
    await Deno.writeFile(img, image(51));
    await initJob(g, join(dir, "vm"), img, bucket);
    const cases: [Record<string, string>, RegExp][] = [
      [{ AWS_SECRET_ACCESS_KEY: "wrong-secret" }, /credentials refused: wrong secret key/],
      [{ AWS_ACCESS_KEY_ID: "nobody" }, /credentials refused: unknown access key 'nobody'/],
    ];
    for (const [over, expected] of cases) {
      const r = await backy(["-b", join(dir, "vm"), "backup", "manual:x"], {
        env: { ...g.env, ...over },
      });
      assertEquals(r.code, 1, r.stderr);
      assert(expected.test(r.stderr), r.stderr);
      assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert(!r.stderr.includes("wrong-secret") && !r.stdout.includes("wrong-secret"));
    }
    await setS3(join(dir, "vm"), { bucket: "backy-no-such-bucket" });
    const r = await backy(["-b", join(dir, "vm"), "backup", "manual:x"], { env: g.env });
    assertEquals(r.code, 1);
    assert(/s3 bucket 'backy-no-such-bucket' at .* does not exist/.test(r.stderr), r.stderr);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertEquals((await statusJson(g, join(dir, "vm"))).length, 0, "nothing counted");
    const n = await backy(["-b", join(dir, "n"), "init", "s3", `${bucket}/nope`], { env: g.env });
    assertEquals(n.code, 1);
    assert(/has no job 'nope'/.test(n.stderr), n.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const own = "ignored" in gw ? gw : await ownGateway("stopper");
s3Test(
  own,
  "s3: RGW stopped mid-backup: clear error, nothing counted; works after restart",
  async (g) => {
    const gwc = g as Gateway & { stop(): Promise<void>; start(): Promise<void> };
    const dir = await tempDir();
    try {
      const bucket = await newBucket(g);
      const img = join(dir, "img");
      const data = randomBytes(96 * MiB, 61);
      await Deno.writeFile(img, data);
      await initJob(g, join(dir, "vm"), img, bucket);
      await setS3(join(dir, "vm"), { attempts: 2 });
      const child = backy(["-b", join(dir, "vm"), "backup", "manual:x"], { env: g.env });
      // Stop the gateway as soon as the first chunk has landed.
      const deadline = Date.now() + 30_000;
      while ((await listKeys(g, bucket, "chunks/")).length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await gwc.stop();
      const r = await child;
      await gwc.start();
      assertEquals(r.code, 1, r.stdout);
      assert(
        /s3 bucket '.*' at http:\/\/127\.0\.0\.1:\d+: .* failed after 2 attempt\(s\)/.test(
          r.stderr,
        ),
        r.stderr,
      );
      assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
      const revs = await statusJson(g, join(dir, "vm"));
      assert(
        revs.every((x: { complete?: boolean; duration?: unknown }) => !x.complete),
        JSON.stringify(revs),
      );
      assertEquals(
        (await listKeys(g, bucket, "jobs/vm/")).filter((o) => o.key.endsWith(".rev")).length,
        0,
      );
      await ok(g, ["-b", join(dir, "vm"), "backup", "manual:y"]);
      const after = await statusJson(g, join(dir, "vm"));
      assertEquals(after.length, 1, "the failed revision was cleaned up");
      sameBytes(await restoreBytes(g, join(dir, "vm"), "0"), data, "after restart");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

s3Test(gw, "s3: expire and tags publish to the bucket; pull on another host follows", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g);
    const img = join(dir, "img");
    await Deno.writeFile(img, image(71));
    const a = join(dir, "a");
    await initJob(g, a, img, bucket, "host-a");
    // A schedule as the scheduler writes it: keep 1 "daily" (every second here).
    const cfg = YAML.parse(await Deno.readTextFile(join(a, "config")));
    cfg.schedule = { daily: { interval: 1, keep: 1 } };
    await Deno.writeTextFile(join(a, "config"), YAML.stringify(cfg), { mode: 0o600 });
    await ok(g, ["-b", a, "backup", "daily"]);
    await patchFile(img, 0, 100, 72);
    await ok(g, ["-b", a, "backup", "daily"]);
    const other = join(dir, "other");
    await ok(g, ["-b", other, "init", "s3", `${bucket}/a`]);
    assertEquals((await statusJson(g, other)).length, 2);

    await ok(g, ["-b", a, "tags", "-r", "0", "add", "manual:keep"]);
    await new Promise((r) => setTimeout(r, 2100)); // both older than keep × interval
    await ok(g, ["-b", a, "expire"]); // the older revision loses 'daily' and goes
    const left = await statusJson(g, a);
    assertEquals(left.length, 1);
    const revs = (await listKeys(g, bucket, "jobs/a/")).map((o) => o.key).filter((k) =>
      k.endsWith(".rev")
    );
    assertEquals(revs, [`jobs/a/${left[0].id}.rev`]);
    const pulled = await ok(g, ["-b", other, "pull"]);
    assert(pulled.stdout.includes("1 revision(s) fetched, 1 removed"), pulled.stdout);
    const there = await statusJson(g, other);
    assertEquals(there.map((r: { id: string; tags: string[] }) => [r.id, r.tags]), [
      [left[0].id, ["daily", "manual:keep"]],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

s3Test(gw, "s3: a credentials file others can read is refused; secrets never logged", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g);
    const img = join(dir, "img");
    await Deno.writeFile(img, image(81));
    const creds = join(dir, "creds");
    await Deno.writeTextFile(
      creds,
      `[backup]\naws_access_key_id=${g.accessKeyId}\naws_secret_access_key=${g.secretAccessKey}\n`,
      { mode: 0o644 },
    );
    await Deno.chmod(creds, 0o644);
    await initJob(g, join(dir, "vm"), img, bucket);
    await setS3(join(dir, "vm"), { "credentials-file": creds, profile: "backup" });
    const env = { ...g.env, AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "" };
    const log = join(dir, "backy.log");
    const r = await backy(["-l", log, "-b", join(dir, "vm"), "backup", "manual:x"], { env });
    assertEquals(r.code, 1);
    assert(/credentials file .*creds is readable by others .*chmod 600/.test(r.stderr), r.stderr);
    await Deno.chmod(creds, 0o600);
    const r2 = await backy(["-l", log, "-v", "-b", join(dir, "vm"), "backup", "manual:x"], { env });
    assertEquals(r2.code, 0, r2.stderr);
    const text = await Deno.readTextFile(log);
    assert(text.includes("Backup complete"));
    assert(!text.includes(g.secretAccessKey), "the secret key is in the log");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

s3Test(gw, "s3: a chunked job moves into the bucket as it is (same chunk format)", async (g) => {
  const dir = await tempDir();
  try {
    const bucket = await newBucket(g);
    const img = join(dir, "img");
    await Deno.writeFile(img, image(91));
    const data = await Deno.readFile(img);
    const local = join(dir, "local");
    await ok(g, ["-b", local, "init", "--backend", "chunked", "file", img]);
    await ok(g, ["-b", local, "backup", "manual:x"]);
    // Copy it as an operator would with rclone/s3cmd: chunk files, index, .rev, config.
    for await (const d of Deno.readDir(join(local, "chunks"))) {
      for await (const f of Deno.readDir(join(local, "chunks", d.name))) {
        const bytes = await Deno.readFile(join(local, "chunks", d.name, f.name));
        await putObject(g, bucket, `chunks/${d.name}/${f.name}`, bytes);
      }
    }
    const id = (await statusJson(g, local))[0].id;
    await putObject(
      g,
      bucket,
      `jobs/moved/${id}.index`,
      await Deno.readFile(join(local, `${id}.index`)),
    );
    const rev = editRevText(
      await Deno.readTextFile(join(local, `${id}.rev`)),
      (body) => body.replace("backend: chunked", "backend: s3"),
    );
    await putObject(g, bucket, `jobs/moved/${id}.rev`, new TextEncoder().encode(rev));
    const cfg =
      `type: file\nfilename: ${img}\nbackend: s3\ns3:\n  bucket: ${bucket}\n  job: moved\n`;
    await putObject(g, bucket, "jobs/moved/config", new TextEncoder().encode(cfg));
    const moved = join(dir, "moved");
    await ok(g, ["-b", moved, "init", "s3", `${bucket}/moved`]);
    sameBytes(await restoreBytes(g, moved, "0"), data, "moved job");
    // And it carries on in the bucket: nothing is uploaded again for unchanged blocks.
    const before = (await chunkKeys(g, bucket)).length;
    await ok(g, ["-b", moved, "backup", "manual:y"]);
    assertEquals((await chunkKeys(g, bucket)).length, before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
