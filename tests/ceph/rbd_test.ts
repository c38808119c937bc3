// Tests of the rbd wrapper against a real throw-away cluster (tests/ceph/cluster.ts).
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import {
  type Feed,
  Rbd,
  RbdError,
  SnapshotProtectedError,
  summarizeStderr,
} from "../../src/sources/ceph/rbd.ts";
import { BackyError } from "../../src/util/errors.ts";
import {
  assertSameBytes,
  cephCluster,
  cephTest,
  createTestImage,
  expectedImage,
  pattern,
  readAll,
  removeImage,
  reportIgnored,
  uniqueName,
  type Write,
  writeAt,
} from "./cluster.ts";

const MiB = 1024 * 1024;
const cluster = await cephCluster();
reportIgnored(cluster, "rbd_test.ts");

/** Writes spread over several 4 MiB objects, including unaligned ones and one at the end. */
function someWrites(size: number, seed: number): Write[] {
  return [
    { offset: 0, data: pattern(4096, seed) },
    { offset: 5 * MiB + 123, data: pattern(100_000, seed + 1) },
    { offset: 9 * MiB - 7, data: pattern(13, seed + 2) },
    { offset: size - 65536, data: pattern(65536, seed + 3) },
  ];
}

Deno.test("summarizeStderr keeps rbd's own lines, drops Ceph log noise", () => {
  assertEquals(
    summarizeStderr(
      "2026-11-27T01:22:08.439+0000 7f3d737fe6c0 -1 librbd::Operations: snapshot is protected\n" +
        "\nrbd: snapshot 's1' is protected from removal.\n",
    ),
    "snapshot 's1' is protected from removal.",
  );
  assertEquals(
    summarizeStderr("error setting snapshot context: (2) No such file or directory\n"),
    "error setting snapshot context: (2) No such file or directory",
  );
  assertEquals(summarizeStderr(""), "(no error output)");
  assertEquals(summarizeStderr("x".repeat(2000)).length, 500);
});

Deno.test("a missing rbd binary is a clear BackyError", async () => {
  const rbd = new Rbd({ binary: "/nonexistent/rbd" });
  await rejects(rbd.info("rbd/x"), (e: Error) => {
    assert(e instanceof BackyError);
    assert(e.message.includes("/nonexistent/rbd"), e.message);
    return true;
  });
  const s = rbd.export("rbd/x@y");
  await rejects(s.done, BackyError);
  await rejects(readAll(s.stdout), BackyError);
});

cephTest(cluster, "info/imageExists: existing, missing image, pool, snapshot", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const img = await createTestImage(c, 12 * MiB + 512);
  try {
    const info = await rbd.info(img.spec);
    assert(info);
    assertEquals(info.name, img.name);
    assertEquals(info.size, 12 * MiB + 512);
    assertEquals(info.objectSize, 4 * MiB);
    assertEquals(info.snapshotCount, 0);
    assertEquals(info.protected, undefined);
    assert(await rbd.imageExists(img.spec));
    assertEquals(await rbd.info(`${c.pool}/${uniqueName("missing")}`), undefined);
    assertEquals(await rbd.imageExists(`${c.pool}/${uniqueName("missing")}`), false);
    assertEquals(await rbd.info(`nosuchpool-${Deno.pid}/x`), undefined);
    assertEquals(await rbd.info(`${img.spec}@nosnap`), undefined);
    // a failure other than "does not exist": one line, naming the image
    // no cluster (exit 2 as well) is an error, not "does not exist"; one line, naming the image
    const lost = new Rbd({ env: { CEPH_CONF: "/nonexistent/ceph.conf" } });
    await rejects(lost.info(img.spec), (e: Error) => {
      assert(e instanceof RbdError, String(e));
      assertEquals(e.code, 2);
      assert(e.message.includes(img.spec), e.message);
      assert(e.message.includes("couldn't connect to the cluster"), e.message);
      assert(!e.message.includes("\n"), e.message);
      return true;
    });
    await rejects(lost.imageExists(img.spec), RbdError);
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "snapCreate / snapList / snapRemove", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const img = await createTestImage(c, 8 * MiB);
  try {
    await rbd.snapCreate(img.spec, "backy-a");
    await rbd.resize(img.spec, 10 * MiB);
    await rbd.snapCreate(img.spec, "backy-b");
    const snaps = await rbd.snapList(img.spec);
    assertEquals(snaps.map((s) => [s.name, s.size, s.protected]), [
      ["backy-a", 8 * MiB, false],
      ["backy-b", 10 * MiB, false],
    ]);
    assert(snaps[0].id < snaps[1].id);
    assertEquals((await rbd.info(`${img.spec}@backy-a`))?.size, 8 * MiB);
    assertEquals((await rbd.info(`${img.spec}@backy-a`))?.protected, false);
    // creating an existing snapshot fails with rbd's reason and the snapshot's name
    await rejects(rbd.snapCreate(img.spec, "backy-a"), (e: Error) => {
      assert(e instanceof RbdError);
      assert(e.message.includes(`${img.spec}@backy-a`), e.message);
      assert(/exists/i.test(e.message), e.message);
      return true;
    });
    await rbd.snapRemove(img.spec, "backy-a");
    assertEquals((await rbd.snapList(img.spec)).map((s) => s.name), ["backy-b"]);
    await rejects(rbd.snapRemove(img.spec, "backy-a"), (e: Error) => {
      assert(e instanceof RbdError && !(e instanceof SnapshotProtectedError));
      assert(e.message.includes(`${img.spec}@backy-a`), e.message);
      return true;
    });
    await rejects(rbd.snapList(`${c.pool}/${uniqueName("missing")}`), RbdError);
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "removing a protected snapshot is a SnapshotProtectedError", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const img = await createTestImage(c, 4 * MiB);
  try {
    await rbd.snapCreate(img.spec, "keep");
    await rbd.snapProtect(img.spec, "keep");
    assertEquals((await rbd.snapList(img.spec))[0].protected, true);
    await rejects(rbd.snapRemove(img.spec, "keep"), (e: Error) => {
      assert(e instanceof SnapshotProtectedError, String(e));
      assert(e instanceof BackyError);
      assertEquals([e.image, e.snapshot, e.code], [img.spec, "keep", 16]);
      assert(e.message.includes(`${img.spec}@keep`), e.message);
      return true;
    });
    await rbd.snapUnprotect(img.spec, "keep");
    await rbd.snapRemove(img.spec, "keep");
    assertEquals(await rbd.snapList(img.spec), []);
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "export streams the snapshot's exact bytes", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const size = 20 * MiB + 4096;
  const writes = someWrites(size, 7);
  const img = await createTestImage(c, size, writes);
  try {
    await rbd.snapCreate(img.spec, "s1");
    // writes after the snapshot must not show up in its export
    await writeAt(c, img.spec, [{ offset: 0, data: pattern(4096, 99) }]);
    const s = rbd.export(`${img.spec}@s1`);
    const got = await readAll(s.stdout);
    await s.done;
    assertSameBytes(got, expectedImage(size, writes), "export @s1");
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "export of a missing snapshot: done rejects naming it", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const img = await createTestImage(c, 4 * MiB);
  try {
    const s = rbd.export(`${img.spec}@nosnap`);
    assertEquals((await readAll(s.stdout)).length, 0);
    await rejects(s.done, (e: Error) => {
      assert(e instanceof RbdError);
      assertEquals(e.code, 2);
      assert(e.message.includes(`${img.spec}@nosnap`), e.message);
      assert(e.message.includes("No such file or directory"), e.message);
      return true;
    });
    const d = rbd.exportDiff(img.spec, "nosnap", undefined);
    await readAll(d.stdout);
    await rejects(d.done, RbdError);
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "kill() aborts a running export", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const size = 48 * MiB;
  const img = await createTestImage(c, size, [{ offset: 0, data: pattern(size, 5) }]);
  try {
    await rbd.snapCreate(img.spec, "s");
    const s = rbd.export(`${img.spec}@s`);
    const reader = s.stdout[Symbol.asyncIterator]();
    const first = await reader.next();
    assert(!first.done && first.value.length > 0);
    s.kill();
    let total = first.value.length;
    // the pipe may still hold some data; it ends short of the image
    for (let r = await reader.next(); !r.done; r = await reader.next()) total += r.value.length;
    assert(total < size, `read ${total} of ${size} bytes after kill`);
    await rejects(s.done, (e: Error) => {
      assert(e instanceof RbdError);
      assert(e.message.includes("aborted"), e.message);
      return true;
    });
    s.kill(); // after exit: a no-op
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "export-diff: full and incremental streams round-trip", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const size = 16 * MiB;
  const w1 = someWrites(size, 1);
  const img = await createTestImage(c, size, w1);
  const copy = `${c.pool}/${uniqueName("copy")}`;
  try {
    await rbd.snapCreate(img.spec, "s1");
    const w2: Write[] = [
      { offset: 4096, data: pattern(8192, 2) },
      { offset: 13 * MiB, data: pattern(300_000, 3) },
    ];
    await writeAt(c, img.spec, w2);
    await rbd.snapCreate(img.spec, "s2");

    const full = rbd.exportDiff(img.spec, "s1", undefined);
    const fullBytes = await readAll(full.stdout);
    await full.done;
    assertEquals(new TextDecoder().decode(fullBytes.subarray(0, 12)), "rbd diff v1\n");

    const inc = rbd.exportDiff(img.spec, "s2", "s1");
    const incBytes = await readAll(inc.stdout);
    await inc.done;
    assertEquals(new TextDecoder().decode(incBytes.subarray(0, 12)), "rbd diff v1\n");
    // only the touched objects travel: far less than the image
    assert(incBytes.length < fullBytes.length, `${incBytes.length} vs ${fullBytes.length}`);
    assert(incBytes.length > 300_000);

    // apply both to an empty image: it must equal @s2 (proves the streams are complete)
    await rbd.create(copy, size);
    await rbd.importDiffFrom(copy, (feed) => feed(fullBytes));
    await rbd.importDiffFrom(copy, (feed) => feed(incBytes));
    const e = rbd.export(`${copy}@s2`);
    const got = await readAll(e.stdout);
    await e.done;
    assertSameBytes(got, expectedImage(size, [...w1, ...w2]), "copy@s2");
  } finally {
    await removeImage(c, copy);
    await img.remove();
  }
});

cephTest(cluster, "supportsWholeObject agrees with `rbd help export-diff`", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const help = await new Deno.Command("rbd", { args: ["help", "export-diff"], stderr: "null" })
    .output();
  const expected = new TextDecoder().decode(help.stdout).includes("--whole-object");
  const got = await rbd.supportsWholeObject();
  assertEquals(typeof got, "boolean");
  assertEquals(got, expected);
  assertEquals(await rbd.supportsWholeObject(), got); // cached
  assertEquals(await new Rbd({ binary: "/bin/false" }).supportsWholeObject(), false);
  if (!got) return;
  const img = await createTestImage(c, 8 * MiB, [{ offset: 4 * MiB, data: pattern(512, 1) }]);
  try {
    await rbd.snapCreate(img.spec, "s1");
    await writeAt(c, img.spec, [{ offset: 4 * MiB + 1024, data: pattern(512, 2) }]);
    await rbd.snapCreate(img.spec, "s2");
    const d = rbd.exportDiff(img.spec, "s2", "s1", { wholeObject: true });
    const bytes = await readAll(d.stdout);
    await d.done;
    assertEquals(new TextDecoder().decode(bytes.subarray(0, 12)), "rbd diff v1\n");
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "importFrom fed in odd-sized pieces, then export: same bytes", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const size = 9 * MiB + 333; // not a multiple of anything rbd likes
  const data = pattern(size, 42);
  data.fill(0, 2 * MiB, 6 * MiB); // a zero run rbd may keep sparse
  const target = `${c.pool}/${uniqueName("import")}`;
  try {
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < size; at += 1_000_003) chunks.push(data.subarray(at, at + 1_000_003));
    await rbd.importFrom(target, async (feed) => {
      for (const chunk of chunks) await feed(chunk);
    });
    const info = await rbd.info(target);
    assertEquals([info?.size, info?.format], [size, 2]);
    await rbd.snapCreate(target, "s");
    const s = rbd.export(`${target}@s`);
    const got = await readAll(s.stdout);
    await s.done;
    assertSameBytes(got, data, "imported image");
    // into an existing image: rbd refuses, and the error says why
    await rejects(rbd.importFrom(target, (feed) => feed(data.subarray(0, 4096))), (e) => {
      assert(e instanceof RbdError, String(e));
      assert(e.message.includes(target) && /exists/.test(e.message), e.message);
      return true;
    });
  } finally {
    await removeImage(c, target);
  }
});

cephTest(cluster, "importFrom: a failing producer aborts rbd instead of committing", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const target = `${c.pool}/${uniqueName("abort")}`;
  try {
    const source = async (feed: Feed) => {
      for (let n = 1; n <= 3; n++) await feed(pattern(MiB, n));
      throw new Error("disk on fire");
    };
    await rejects(rbd.importFrom(target, source), (e: Error) => {
      assert(e instanceof BackyError);
      assert(e.message.includes("disk on fire"), e.message);
      assert(e.message.includes(`incomplete ${target} removed`), e.message);
      return true;
    });
    assertEquals(await rbd.info(target), undefined);
  } finally {
    await removeImage(c, target);
  }
});

cephTest(cluster, "create / resize / remove", async (c) => {
  const rbd = new Rbd({ env: c.env });
  const spec = `${c.pool}/${uniqueName("crr")}`;
  try {
    await rbd.create(spec, 3 * MiB + 1);
    assertEquals((await rbd.info(spec))?.size, 3 * MiB + 1);
    await rbd.resize(spec, 5 * MiB);
    assertEquals((await rbd.info(spec))?.size, 5 * MiB);
    await rejects(rbd.resize(spec, MiB), RbdError); // shrinking needs allowShrink
    await rbd.resize(spec, MiB, { allowShrink: true });
    assertEquals((await rbd.info(spec))?.size, MiB);
    await rbd.remove(spec);
    assertEquals(await rbd.info(spec), undefined);
    await rejects(
      rbd.remove(spec),
      (e: Error) => e instanceof RbdError && e.message.includes(spec),
    );
  } finally {
    await removeImage(c, spec);
  }
});
