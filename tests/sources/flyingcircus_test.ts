// The Consul request of the flyingcircus source (spec 3.5) against a Consul stand-in on a
// real socket, without a Ceph cluster: the VM host here records snapshots in a set.
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { requestConsulSnapshot } from "../../src/sources/flyingcircus.ts";
import { setupLogging, stopLogging } from "../../src/util/log.ts";
import { DEFAULT_TOKEN, FakeConsul } from "./fake_consul.ts";

const UUID_KEY = /^snapshot\/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function withConsul(
  fn: (consul: FakeConsul, snaps: Set<string>) => Promise<void>,
  token: string | null = DEFAULT_TOKEN,
) {
  const snaps = new Set<string>();
  const consul = new FakeConsul(
    { vm1: "rbd/vm1.root" },
    (image, snap) => Promise.resolve(void snaps.add(`${image}@${snap}`)),
    token,
  );
  setupLogging({ verbose: false, console: "stderr" });
  try {
    await fn(consul, snaps);
  } finally {
    stopLogging();
    await consul.close();
  }
}

const request = (consul: FakeConsul, snaps: Set<string>, over: Record<string, unknown> = {}) =>
  requestConsulSnapshot({
    url: consul.url,
    token: DEFAULT_TOKEN,
    vm: "vm1",
    snapshot: "backy-abc",
    timeoutSeconds: 5,
    hasSnapshot: () => Promise.resolve(snaps.has("rbd/vm1.root@backy-abc")),
    pollMs: 50,
    ...over,
  });

Deno.test("the VM host snapshots: true; the request and stale ones deleted, others kept", async () => {
  await withConsul(async (consul, snaps) => {
    consul.put("snapshot/stale", JSON.stringify({ vm: "vm1", snapshot: "backy-old" }));
    consul.put("snapshot/garbage", "not JSON {");
    consul.put("snapshot/other-vm", JSON.stringify({ vm: "vm2", snapshot: "backy-x" }));
    consul.put("snapshot/manual", JSON.stringify({ vm: "vm1", snapshot: "manual" }));
    assertEquals(await request(consul, snaps), true);
    assertEquals(consul.requests.length, 1);
    const req = consul.requests[0];
    assert(UUID_KEY.test(req.key), req.key);
    assertEquals(req.value, { vm: "vm1", snapshot: "backy-abc" });
    assertEquals(consul.keys(), ["snapshot/manual", "snapshot/other-vm"]);
    for (const l of consul.log) assertEquals(l.token, DEFAULT_TOKEN, `${l.method} ${l.path}`);
    assert(consul.log.some((l) => l.method === "DELETE" && l.path === `/v1/kv/${req.key}`));
  });
});

Deno.test("a slow VM host is polled until the snapshot appears", async () => {
  await withConsul(async (consul, snaps) => {
    consul.host = { kind: "after", ms: 300 };
    const started = Date.now();
    assertEquals(await request(consul, snaps), true);
    assert(Date.now() - started >= 300, "waited for the host");
    assertEquals(consul.keys(), []);
  });
});

Deno.test("no snapshot within the timeout: false, and the request is deleted", async () => {
  await withConsul(async (consul, snaps) => {
    consul.host = { kind: "never" };
    assertEquals(await request(consul, snaps, { timeoutSeconds: 0.3 }), false);
    assertEquals(consul.requests.length, 1);
    assertEquals(consul.keys(), []);
  });
});

Deno.test("a wrong token is refused with Consul's status; nothing is left behind", async () => {
  await withConsul(async (consul, snaps) => {
    await rejects(
      () => request(consul, snaps, { token: "wrong" }),
      /Consul refused the snapshot request \(403\): Permission denied/,
    );
    assertEquals(consul.requests, []);
    assertEquals(consul.keys(), []);
  });
});

Deno.test("an unreachable Consul is a clear error naming the request", async () => {
  await withConsul(async (consul, snaps) => {
    const url = consul.url;
    await consul.close();
    await rejects(
      () => request(consul, snaps, { url }),
      (e: Error) => e.message.startsWith(`Consul request PUT ${url}/v1/kv/snapshot/`),
    );
  });
});
