// The flyingcircus source against the real test cluster and a Consul stand-in: an HTTP server
// in this test implements Consul's KV endpoints as Consul documents them
// (https://developer.hashicorp.com/consul/api-docs/kv: PUT/GET/DELETE /v1/kv/<key>, `recurse`,
// base64 values in GET, `true` from PUT and DELETE, ACL token in X-Consul-Token, 403 for a
// wrong one) and plays the VM host: a PUT of `snapshot/<uuid>` makes it create the requested
// snapshot in the real cluster, at once, after a delay, or never.
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

const TOKEN = "s3cret-acl-token";
const UUID_KEY = /^snapshot\/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface KvEntry {
  value: Uint8Array;
  flags: number;
  createIndex: number;
  modifyIndex: number;
}

type HostMode = { kind: "now" } | { kind: "after"; ms: number } | { kind: "never" };

/** Consul's KV HTTP API (the parts backy uses), plus a VM host acting on snapshot requests. */
class FakeConsul {
  readonly kv = new Map<string, KvEntry>();
  /** Every request: method, path with query, token sent. */
  readonly log: { method: string; path: string; token: string | null }[] = [];
  /** Snapshot requests as the host saw them. */
  readonly requests: { key: string; value: unknown }[] = [];
  host: HostMode = { kind: "now" };
  #index = 1;
  #pending: Promise<void>[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(
    readonly cluster: CephCluster,
    /** VM name → image spec, as the host knows its VMs' root disks. */
    readonly vms: Record<string, string>,
    readonly token: string | null = TOKEN,
  ) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => this.#handle(req),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  put(key: string, value: string) {
    const i = this.#index++;
    this.kv.set(key, {
      value: new TextEncoder().encode(value),
      flags: 0,
      createIndex: i,
      modifyIndex: i,
    });
  }

  keys(): string[] {
    return [...this.kv.keys()].sort();
  }

  async close() {
    await Promise.all(this.#pending);
    await this.#server.shutdown();
  }

  #entry(key: string, e: KvEntry) {
    return {
      LockIndex: 0,
      Key: key,
      Flags: e.flags,
      // Consul: base64 of the raw bytes, null for an empty value
      Value: e.value.length ? btoa(String.fromCharCode(...e.value)) : null,
      CreateIndex: e.createIndex,
      ModifyIndex: e.modifyIndex,
    };
  }

  async #handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const token = req.headers.get("X-Consul-Token") ?? url.searchParams.get("token");
    this.log.push({ method: req.method, path: url.pathname + url.search, token });
    if (!url.pathname.startsWith("/v1/kv/")) return new Response("Not found", { status: 404 });
    if (this.token !== null && token !== this.token) {
      await req.body?.cancel();
      return new Response("Permission denied", { status: 403 });
    }
    const key = decodeURIComponent(url.pathname.slice("/v1/kv/".length));
    const recurse = url.searchParams.has("recurse");
    const json = (v: unknown, status = 200) =>
      new Response(JSON.stringify(v), {
        status,
        headers: { "Content-Type": "application/json", "X-Consul-Index": String(this.#index) },
      });
    if (req.method === "PUT") {
      const value = new Uint8Array(await req.arrayBuffer());
      const old = this.kv.get(key);
      const i = this.#index++;
      this.kv.set(key, {
        value,
        flags: Number(url.searchParams.get("flags") ?? 0),
        createIndex: old?.createIndex ?? i,
        modifyIndex: i,
      });
      if (key.startsWith("snapshot/")) await this.#hostSees(key, value);
      return json(true);
    }
    if (req.method === "GET") {
      const found = [...this.kv.entries()]
        .filter(([k]) => (recurse ? k.startsWith(key) : k === key))
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, e]) => this.#entry(k, e));
      return found.length ? json(found) : new Response(null, { status: 404 });
    }
    if (req.method === "DELETE") {
      for (const k of [...this.kv.keys()]) {
        if (recurse ? k.startsWith(key) : k === key) this.kv.delete(k);
      }
      return json(true);
    }
    return new Response("Method not allowed", { status: 405 });
  }

  /** The VM host's agent: freeze, snapshot, thaw (here: just the snapshot). */
  async #hostSees(key: string, raw: Uint8Array) {
    let value: { vm?: string; snapshot?: string };
    try {
      value = JSON.parse(new TextDecoder().decode(raw));
    } catch {
      return;
    }
    this.requests.push({ key, value });
    const image = value.vm ? this.vms[value.vm] : undefined;
    if (!image || !value.snapshot) return;
    const snap = () =>
      rbdCli(this.cluster, ["snap", "create", "--no-progress", `${image}@${value.snapshot}`])
        .then(() => {});
    if (this.host.kind === "now") await snap();
    else if (this.host.kind === "after") {
      const ms = this.host.ms;
      this.#pending.push(new Promise((r) => setTimeout(r, ms)).then(snap));
    }
  }
}

/** An image with data, a flyingcircus job for it (VM `vm1`), and the fake Consul. */
async function setup(
  c: CephCluster,
  opts: { jobToken?: string | null; timeout?: string } = {},
) {
  const img = await createTestImage(c, 12 * MiB, [{ offset: MiB, data: pattern(MiB, 81) }]);
  const consul = new FakeConsul(c, { vm1: img.spec });
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
