// The README's restore recipes into Ceph, run for real against the test cluster:
// `rbd import $(backy find -r REV) POOL/NEW` (cow), `backy restore -r REV - | rbd import -
// POOL/NEW`, and `backy restore -r REV rbd:POOL/NEW` (refuses an existing image without
// --force). Each result is compared byte for byte with the snapshot the revision came from.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { assertIncludes, MOD } from "../helpers.ts";
import {
  type CephCluster,
  cephCluster,
  cephTest,
  createTestImage,
  pattern,
  rbdCli,
  removeImage,
  reportIgnored,
  uniqueName,
  writeAt,
} from "./cluster.ts";
import {
  assertSameBytes,
  type Backend,
  backupOk,
  type CephJob,
  cephJob,
  exportBytes,
  MiB,
  snapNames,
} from "./jobs.ts";

const cluster = await cephCluster();
reportIgnored(cluster, "restore_test.ts");

/** Runs a bash command line with `backy` defined as the real command and the cluster env. */
async function shell(c: CephCluster, job: CephJob, script: string) {
  const backy =
    `backy() { "${Deno.execPath()}" run --allow-all --quiet "${MOD}" -b "${job.dir}" "$@"; }`;
  const out = await new Deno.Command("bash", {
    args: ["-c", `set -euo pipefail\n${backy}\n${script}`],
    env: c.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function imageNames(c: CephCluster): Promise<string[]> {
  return JSON.parse(new TextDecoder().decode(await rbdCli(c, ["ls", "--format=json", c.pool])));
}

/** A job with two revisions of a 10.5 MiB image and the bytes of each revision's snapshot. */
async function twoRevisions(c: CephCluster, backend: Backend) {
  const size = 10 * MiB + 512 * 1024;
  const img = await createTestImage(c, size, [
    { offset: 0, data: pattern(MiB, 71) },
    { offset: size - 4096, data: pattern(4096, 72) },
  ]);
  const job = await cephJob(c, img.spec, backend);
  const r1 = await backupOk(job);
  const e1 = await exportBytes(c, `${img.spec}@backy-${r1.id}`);
  await writeAt(c, img.spec, [{ offset: 5 * MiB, data: pattern(MiB, 73) }]);
  const r2 = await backupOk(job);
  const e2 = await exportBytes(c, `${img.spec}@backy-${r2.id}`);
  return {
    img,
    job,
    revs: [{ id: r1.id, bytes: e1 }, { id: r2.id, bytes: e2 }],
    async cleanup() {
      await job.cleanup();
      await img.remove();
    },
  };
}

cephTest(cluster, "cow: rbd import $(backy find -r REV) POOL/NEW", async (c) => {
  const t = await twoRevisions(c, "cow");
  const target = `${c.pool}/${uniqueName("import-find")}`;
  try {
    const r = await shell(
      c,
      t.job,
      `rbd import --no-progress "$(backy find -r ${t.revs[0].id})" ${target}`,
    );
    assertEquals(r.code, 0, r.stderr);
    assertSameBytes(await exportBytes(c, target), t.revs[0].bytes, "imported revision 1");
  } finally {
    await removeImage(c, target);
    await t.cleanup();
  }
});

for (const backend of ["cow", "chunked"] as Backend[]) {
  cephTest(cluster, `${backend}: backy restore -r REV - | rbd import - POOL/NEW`, async (c) => {
    const t = await twoRevisions(c, backend);
    const target = `${c.pool}/${uniqueName("import-pipe")}`;
    try {
      const r = await shell(
        c,
        t.job,
        `backy restore -r ${t.revs[0].id} - | rbd import --no-progress - ${target}`,
      );
      assertEquals(r.code, 0, r.stderr);
      assertSameBytes(await exportBytes(c, target), t.revs[0].bytes, "piped revision 1");
    } finally {
      await removeImage(c, target);
      await t.cleanup();
    }
  });

  cephTest(cluster, `${backend}: backy restore -r REV rbd:POOL/NEW, --force`, async (c) => {
    const t = await twoRevisions(c, backend);
    const name = uniqueName("restore-rbd");
    const target = `${c.pool}/${name}`;
    try {
      const first = await t.job.run(["restore", "-r", t.revs[0].id, `rbd:${target}`]);
      assertEquals(first.code, 0, first.stderr);
      assertSameBytes(await exportBytes(c, target), t.revs[0].bytes, "restored revision 1");
      assertEquals(await snapNames(c, target), []);

      // an existing image is refused and left as it was
      const refused = await t.job.run(["restore", "-r", t.revs[1].id, `rbd:${target}`]);
      assertEquals(refused.code, 1);
      assertIncludes(refused.stderr, `rbd image ${target} exists; use --force`);
      assertSameBytes(await exportBytes(c, target), t.revs[0].bytes, "refused: unchanged");

      const forced = await t.job.run(["restore", "-r", t.revs[1].id, "--force", `rbd:${target}`]);
      assertEquals(forced.code, 0, forced.stderr);
      assertSameBytes(await exportBytes(c, target), t.revs[1].bytes, "forced: revision 2");
      // no temporary images left behind
      assertEquals((await imageNames(c)).filter((n) => n.startsWith(name)), [name]);
    } finally {
      await removeImage(c, target);
      await t.cleanup();
    }
  });
}

cephTest(cluster, "restore into Ceph: bad targets fail clearly and leave nothing", async (c) => {
  const t = await twoRevisions(c, "chunked");
  try {
    const bad = await t.job.run(["restore", "rbd:just-a-name"]);
    assertEquals(bad.code, 1);
    assertIncludes(bad.stderr, "must be rbd:POOL/IMAGE");

    const noPool = await t.job.run(["restore", `rbd:nosuchpool${Deno.pid}/x`]);
    assertEquals(noPool.code, 1);
    assertIncludes(noPool.stderr, `nosuchpool${Deno.pid}`);
    assert(!noPool.stderr.includes("    at "), "no stack trace");

    const name = uniqueName("never");
    const noRbd = await t.job.run(["restore", `rbd:${c.pool}/${name}`], {
      BACKY_RBD: "/nonexistent/bin/rbd",
    });
    assertEquals(noRbd.code, 1);
    assertIncludes(noRbd.stderr, "cannot run rbd (/nonexistent/bin/rbd)");
    // neither the target nor a temporary image of it (other tests' images come and go)
    assertEquals((await imageNames(c)).filter((n) => n.startsWith(name)), []);
  } finally {
    await t.cleanup();
  }
});

cephTest(
  cluster,
  "restore into Ceph: a corrupt chunk stops it, naming the chunk; no image left",
  async (c) => {
    const t = await twoRevisions(c, "chunked");
    try {
      // The last block of the newest revision (written at the end of the stream).
      const chunks: string[] = [];
      for await (const d of Deno.readDir(join(t.job.dir, "chunks"))) {
        for await (const f of Deno.readDir(join(t.job.dir, "chunks", d.name))) {
          chunks.push(join(t.job.dir, "chunks", d.name, f.name));
        }
      }
      const last = t.revs[1].bytes.subarray(2 * 4 * MiB);
      const digest = createHash("sha256").update(last).digest("hex");
      const victim = chunks.find((p) => p.endsWith(digest));
      assert(victim, `a chunk named ${digest} among ${chunks.length}`);
      const bytes = await Deno.readFile(victim);
      bytes[bytes.length - 10] ^= 0xff;
      await Deno.chmod(victim, 0o640);
      await Deno.writeFile(victim, bytes);

      const name = uniqueName("corrupt");
      const r = await t.job.run(["restore", "-r", "0", `rbd:${c.pool}/${name}`]);
      assertEquals(r.code, 1);
      assertIncludes(r.stderr, `chunk ${victim} is corrupt`);
      assert(!r.stderr.includes("    at "), "no stack trace");
      assertEquals((await imageNames(c)).filter((n) => n.startsWith(name)), []);
    } finally {
      await t.cleanup();
    }
  },
);
