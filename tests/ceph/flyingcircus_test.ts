// The flyingcircus source against the real test cluster and a Consul stand-in
// (../sources/fake_consul.ts) whose VM host creates the requested snapshots in the cluster.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { assertIncludes, backy, revisions, tempDir } from "../helpers.ts";
import {
  type CephCluster,
  cephCluster,
  cephTest,
  createTestImage,
  pattern,
  rbdCli,
  reportIgnored,
  writeAt,
} from "./cluster.ts";
import { DEFAULT_TOKEN, FakeConsul } from "../sources/fake_consul.ts";
import {
  assertSameBytes,
  backupOk,
  cephJob,
  editConfig,
  exportBytes,
  MiB,
  restoreBytes,
  snapNames,
  stats,
} from "./jobs.ts";

const cluster = await cephCluster();
reportIgnored(cluster, "flyingcircus_test.ts");

const TOKEN = DEFAULT_TOKEN;
const UUID_KEY = /^snapshot\/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** An image with data, a flyingcircus job for it (VM `vm1`), and the fake Consul. */
async function setup(
  c: CephCluster,
  opts: { jobToken?: string | null; timeout?: string } = {},
) {
  const img = await createTestImage(c, 12 * MiB, [{ offset: MiB, data: pattern(MiB, 81) }]);
  const consul = new FakeConsul(
    { vm1: img.spec },
    (image, snap) =>
      rbdCli(c, ["snap", "create", "--no-progress", `${image}@${snap}`]).then(() => {}),
  );
  const token = opts.jobToken === undefined ? TOKEN : opts.jobToken;
  const job = await cephJob(
    c,
    img.spec,
    "chunked",
    "flyingcircus",
    `${img.spec},vm1${token === null ? "" : `,${token}`}`,
  );
  const changes: Record<string, unknown> = { consul_url: consul.url };
  if (opts.timeout) changes.snapshot_timeout = opts.timeout;
  await editConfig(job, changes);
  return {
    img,
    consul,
    job,
    async cleanup() {
      await consul.close();
      await job.cleanup();
      await img.remove();
    },
  };
}

cephTest(cluster, "the VM host takes the snapshot: consul; stale requests removed", async (c) => {
  const t = await setup(c);
  try {
    t.consul.put("snapshot/stale-same-vm", JSON.stringify({ vm: "vm1", snapshot: "backy-old" }));
    t.consul.put("snapshot/garbage", "this is not JSON {");
    t.consul.put("snapshot/other-vm", JSON.stringify({ vm: "vm2", snapshot: "backy-x" }));
    t.consul.put("snapshot/same-vm-manual", JSON.stringify({ vm: "vm1", snapshot: "manual" }));
    t.consul.put("config/unrelated", "keep me");

    const r1 = await backupOk(t.job);
    assertEquals(stats(r1).snapshot, "consul");
    assertEquals(stats(r1).mode, "full");
    assertEquals(t.consul.requests.length, 1);
    const req = t.consul.requests[0];
    assert(UUID_KEY.test(req.key), req.key);
    assertEquals(req.value, { vm: "vm1", snapshot: `backy-${r1.id}` });
    // every request carried the job's ACL token
    assert(t.consul.log.length >= 3);
    for (const l of t.consul.log) assertEquals(l.token, TOKEN, `${l.method} ${l.path}`);
    // the request itself and stale ones for this VM are gone; others are kept
    assertEquals(t.consul.keys(), [
      "config/unrelated",
      "snapshot/other-vm",
      "snapshot/same-vm-manual",
    ]);
    assert(t.consul.log.some((l) => l.method === "DELETE" && l.path === `/v1/kv/${req.key}`));
    assertEquals(await snapNames(c, t.img.spec), [`backy-${r1.id}`]);
    const e1 = await exportBytes(c, `${t.img.spec}@backy-${r1.id}`);
    assertSameBytes(await restoreBytes(t.job, r1.id), e1, "revision 1");

    // the next one asks again and diffs from the host-made snapshot
    await writeAt(c, t.img.spec, [{ offset: 9 * MiB, data: pattern(4096, 82) }]);
    const r2 = await backupOk(t.job);
    assertEquals([stats(r2).snapshot, stats(r2).mode], ["consul", "diff"]);
    assertEquals(t.consul.requests.at(-1)?.value, { vm: "vm1", snapshot: `backy-${r2.id}` });
    assertEquals(t.consul.keys().filter((k) => k.startsWith("snapshot/")).length, 2);
    const e2 = await exportBytes(c, `${t.img.spec}@backy-${r2.id}`);
    assertSameBytes(await restoreBytes(t.job, r2.id), e2, "revision 2");
    assertEquals(await snapNames(c, t.img.spec), [`backy-${r2.id}`]);
  } finally {
    await t.cleanup();
  }
});

cephTest(cluster, "the VM host snapshots after a delay within the time-out", async (c) => {
  const t = await setup(c, { timeout: "20s" });
  try {
    t.consul.host = { kind: "after", ms: 1200 };
    const started = Date.now();
    const r1 = await backupOk(t.job);
    assert(Date.now() - started >= 1200, "backy waited for the host");
    assertEquals(stats(r1).snapshot, "consul");
    assertEquals(t.consul.keys(), []);
    const e1 = await exportBytes(c, `${t.img.spec}@backy-${r1.id}`);
    assertSameBytes(await restoreBytes(t.job, r1.id), e1, "revision 1");
  } finally {
    await t.cleanup();
  }
});

cephTest(cluster, "the VM host never answers: plain snapshot after the time-out", async (c) => {
  const t = await setup(c, { timeout: "3s" });
  try {
    t.consul.host = { kind: "never" };
    const started = Date.now();
    const r = await t.job.run(["backup", "daily"]);
    const took = Date.now() - started;
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assertIncludes(r.stdout + r.stderr, "timed out");
    assert(took >= 2000 && took < 15_000, `took ${took} ms`);
    const [r1] = await revisions(t.job.dir);
    assertEquals(stats(r1).snapshot, "rbd");
    assert(r1.duration !== undefined);
    assertEquals(t.consul.requests.length, 1);
    assertEquals(t.consul.keys(), [], "the unanswered request was deleted");
    assertEquals(await snapNames(c, t.img.spec), [`backy-${r1.id}`]);
    const e1 = await exportBytes(c, `${t.img.spec}@backy-${r1.id}`);
    assertSameBytes(await restoreBytes(t.job, r1.id), e1, "revision 1");
  } finally {
    await t.cleanup();
  }
});

cephTest(cluster, "a wrong or missing ACL token is a clear error", async (c) => {
  for (const jobToken of ["wrong-token", null]) {
    const t = await setup(c, { jobToken });
    try {
      const r = await t.job.run(["backup", "daily"]);
      assertEquals(r.code, 1, r.stdout + r.stderr);
      assertIncludes(r.stderr, "Consul refused the snapshot request (403)");
      assertIncludes(r.stderr, "Permission denied");
      assert(!r.stderr.includes("    at "), "no stack trace");
      assertEquals(t.consul.requests, []);
      assertEquals(t.consul.keys(), []);
      assertEquals(await snapNames(c, t.img.spec), []);
      assertEquals(t.consul.log[0].token, jobToken);
    } finally {
      await t.cleanup();
    }
  }
});

cephTest(cluster, "Consul unreachable: a clear error, no snapshot", async (c) => {
  const t = await setup(c);
  try {
    // a port nothing listens on: the fake's own, after it closed
    await t.consul.close();
    const r = await t.job.run(["backup", "daily"]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertIncludes(r.stderr, `Consul request PUT ${t.consul.url}/v1/kv/snapshot/`);
    assertEquals(await snapNames(c, t.img.spec), []);
  } finally {
    await t.job.cleanup();
    await t.img.remove();
  }
});

Deno.test("init flyingcircus POOL/IMAGE,VM[,TOKEN]: the job config", async () => {
  const base = await tempDir("backy-fc-init-");
  try {
    const read = async (dir: string) =>
      YAML.parse(await Deno.readTextFile(join(dir, "config"))) as Record<string, unknown>;
    const a = join(base, "a");
    const r = await backy([
      "-b",
      a,
      "init",
      "--backend",
      "chunked",
      "flyingcircus",
      "rbd/vm1.root,vm1,tok",
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(await read(a), {
      type: "flyingcircus",
      pool: "rbd",
      image: "vm1.root",
      vm: "vm1",
      consul_acl_token: "tok",
      backend: "chunked",
    });
    const b = join(base, "b");
    assertEquals(
      (await backy(["-b", b, "init", "--backend", "cow", "flyingcircus", "ssd/img,vm2"])).code,
      0,
    );
    assertEquals(await read(b), {
      type: "flyingcircus",
      pool: "ssd",
      image: "img",
      vm: "vm2",
      consul_acl_token: null,
      backend: "cow",
    });
    for (const bad of ["rbd/img", "img,vm", "rbd/img,,tok", "rbd/img,vm,tok,extra"]) {
      const e = await backy(["-b", join(base, "bad"), "init", "flyingcircus", bad]);
      assertEquals(e.code, 2, `${bad}: a usage error`);
      assertIncludes(e.stderr, "POOL/IMAGE,VM[,CONSUL_ACL_TOKEN]");
    }
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
