// Tests of the qemu-nbd based snapshot reader against a real throw-away cluster.
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { openSnapshotReader, qemuRbdFilename } from "../../src/sources/ceph/blockreader.ts";
import { BackyError } from "../../src/util/errors.ts";
import {
  assertSameBytes,
  cephCluster,
  cephTest,
  createTestImage,
  expectedImage,
  pattern,
  rbdCli,
  reportIgnored,
  type Write,
  writeAt,
} from "./cluster.ts";

const MiB = 1024 * 1024;
const cluster = await cephCluster();
reportIgnored(cluster, "blockreader_test.ts");

/** PIDs of running qemu-nbd processes whose command line mentions `needle`. */
function qemuNbdPids(needle: string): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`);
      if (cmd.includes("qemu-nbd") && cmd.includes(needle)) pids.push(Number(e.name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

Deno.test("qemuRbdFilename escapes qemu's separators", () => {
  assertEquals(qemuRbdFilename("rbd", "vm1", "backy-x"), "rbd:rbd/vm1@backy-x");
  assertEquals(
    qemuRbdFilename("p/q", "a:b@c/d\\e", "s/1@2:3", "/etc/c=1:x@y/ceph.conf"),
    "rbd:p\\/q/a\\:b\\@c\\/d\\\\e@s/1@2\\:3:conf=/etc/c=1\\:x@y/ceph.conf",
  );
});

Deno.test("a missing qemu-nbd binary is a clear BackyError", async () => {
  await rejects(
    openSnapshotReader("rbd", "x", "y", { binary: "/nonexistent/qemu-nbd", size: 4096 }),
    (e: Error) => {
      assert(e instanceof BackyError, String(e));
      assert(e.message.includes("/nonexistent/qemu-nbd"), e.message);
      assert(e.message.includes("BACKY_QEMU_NBD"), e.message);
      return true;
    },
  );
});

cephTest(cluster, "reads at random offsets equal the exported snapshot", async (c) => {
  const size = 40 * MiB + 12345; // > 32 MiB: a whole-image read needs several requests
  const writes: Write[] = [
    { offset: 0, data: pattern(3 * MiB, 1) },
    { offset: 4 * MiB - 100, data: pattern(200, 2) }, // across an object boundary
    { offset: 17 * MiB + 3, data: pattern(5 * MiB, 3) },
    { offset: size - 9000, data: pattern(9000, 4) },
  ];
  const img = await createTestImage(c, size, writes, "reader");
  try {
    await rbdCli(c, ["snap", "create", "--no-progress", `${img.spec}@s1`]);
    // changes after the snapshot must not be visible through it
    await writeAt(c, img.spec, [{ offset: 0, data: pattern(MiB, 9) }]);
    const expected = expectedImage(size, writes);
    const exported = await rbdCli(c, ["export", "--no-progress", `${img.spec}@s1`, "-"]);
    assertSameBytes(exported, expected, "rbd export");

    await using reader = await openSnapshotReader(c.pool, img.name, "s1", { env: c.env });
    assertEquals(reader.size, size);
    const bs = 4 * MiB;
    for (let i = 0; i < 12; i++) {
      const block = Math.floor(Math.random() * Math.floor(size / bs));
      assertSameBytes(
        await reader.read(block * bs, bs),
        exported.subarray(block * bs, block * bs + bs),
        `block ${block}`,
      );
    }
    for (let i = 0; i < 20; i++) {
      const offset = Math.floor(Math.random() * size);
      const length = Math.floor(Math.random() * 300_000);
      assertSameBytes(
        await reader.read(offset, length),
        exported.subarray(offset, offset + length),
        `range ${offset}+${length}`,
      );
    }
    // many reads in flight on one connection, answered by handle
    const offsets = Array.from({ length: 16 }, (_, i) => (i * 2_500_007) % (size - MiB));
    const got = await Promise.all(offsets.map((o) => reader.read(o, MiB)));
    offsets.forEach((o, i) => assertSameBytes(got[i], exported.subarray(o, o + MiB), `#${i}`));
    // the whole image in one call (split into requests of at most 32 MiB)
    assertSameBytes(await reader.read(0, size), exported, "whole image");
    // like pread: short at the end, empty beyond it
    assertSameBytes(await reader.read(size - 10, 100), exported.subarray(size - 10), "tail");
    assertEquals((await reader.read(size, 10)).length, 0);
    assertEquals((await reader.read(5, 0)).length, 0);
    await rejects(reader.read(-1, 10), BackyError);
    await rejects(reader.read(0.5, 10), BackyError);
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "close() terminates qemu-nbd; reads afterwards fail", async (c) => {
  const img = await createTestImage(c, 8 * MiB, [{ offset: 0, data: pattern(4096, 1) }]);
  try {
    await rbdCli(c, ["snap", "create", "--no-progress", `${img.spec}@s`]);
    const reader = await openSnapshotReader(c.pool, img.name, "s", { env: c.env });
    const pid = reader.pid;
    assert(alive(pid), "qemu-nbd runs while the reader is open");
    assertEquals(qemuNbdPids(img.name), [pid]);
    assertSameBytes(await reader.read(0, 4096), pattern(4096, 1), "first block");
    await reader.close();
    assert(!alive(pid), `qemu-nbd ${pid} still alive after close`);
    assertEquals(qemuNbdPids(img.name), []);
    await reader.close(); // idempotent
    await rejects(reader.read(0, 10), (e: Error) => {
      assert(e instanceof BackyError);
      assert(e.message.includes("closed"), e.message);
      return true;
    });
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "a missing snapshot fails clearly and leaves no qemu-nbd", async (c) => {
  const img = await createTestImage(c, 4 * MiB);
  try {
    // found missing by `rbd info`, before qemu-nbd is started
    await rejects(openSnapshotReader(c.pool, img.name, "nosnap", { env: c.env }), (e: Error) => {
      assert(e instanceof BackyError, String(e));
      assert(e.message.includes(`${img.spec}@nosnap`), e.message);
      assert(e.message.includes("does not exist"), e.message);
      return true;
    });
    // with the size given, qemu-nbd itself fails: its stderr is in the error
    const opts = { env: c.env, size: 4 * MiB };
    await rejects(openSnapshotReader(c.pool, img.name, "nosnap", opts), (e: Error) => {
      assert(e instanceof BackyError, String(e));
      assert(e.message.includes(`qemu-nbd could not serve ${img.spec}@nosnap`), e.message);
      assert(e.message.includes("No such file or directory"), e.message);
      return true;
    });
    assertEquals(qemuNbdPids(img.name), []);
    await rejects(
      openSnapshotReader(c.pool, `${img.name}-missing`, "s", { env: c.env }),
      BackyError,
    );
    // a size that does not match what qemu-nbd serves
    await rbdCli(c, ["snap", "create", "--no-progress", `${img.spec}@s`]);
    await rejects(
      openSnapshotReader(c.pool, img.name, "s", { env: c.env, size: 3 * MiB }),
      /qemu-nbd reports 4194304 bytes/,
    );
    assertEquals(qemuNbdPids(img.name), []);
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "qemu-nbd dying mid-way: reads fail clearly, close still works", async (c) => {
  const img = await createTestImage(c, 8 * MiB, [{ offset: 0, data: pattern(MiB, 3) }]);
  try {
    await rbdCli(c, ["snap", "create", "--no-progress", `${img.spec}@s`]);
    const reader = await openSnapshotReader(c.pool, img.name, "s", { env: c.env });
    try {
      await reader.read(0, MiB);
      // SIGTERM: a SIGKILLed qemu-nbd leaves its watch on the image, blocking `rbd rm` for 30 s
      Deno.kill(reader.pid, "SIGTERM");
      await rejects(reader.read(0, MiB), (e: Error) => {
        assert(e instanceof BackyError, String(e));
        assert(e.message.includes(img.spec), e.message);
        return true;
      });
    } finally {
      await reader.close();
    }
    assert(!alive(reader.pid));
  } finally {
    await img.remove();
  }
});

cephTest(cluster, "a ceph.conf path with qemu's separators in it works", async (c) => {
  const top = await Deno.makeTempDir({ prefix: "backy-conf-" });
  const dir = `${top}/a:b@c=d`;
  const img = await createTestImage(c, 4 * MiB, [{ offset: 1000, data: pattern(5000, 8) }]);
  try {
    await Deno.mkdir(dir);
    await Deno.symlink(c.env.CEPH_CONF, `${dir}/ceph.conf`);
    await rbdCli(c, ["snap", "create", "--no-progress", `${img.spec}@s`]);
    await using reader = await openSnapshotReader(c.pool, img.name, "s", {
      env: { ...c.env, CEPH_CONF: `${dir}/ceph.conf` },
    });
    assertSameBytes(await reader.read(1000, 5000), pattern(5000, 8), "data");
  } finally {
    await img.remove();
    await Deno.remove(top, { recursive: true });
  }
});

cephTest(cluster, "qemu-nbd exits by itself when its reader's process dies", async (c) => {
  const img = await createTestImage(c, 4 * MiB, [{ offset: 0, data: pattern(4096, 5) }]);
  try {
    await rbdCli(c, ["snap", "create", "--no-progress", `${img.spec}@s`]);
    const module = new URL("../../src/sources/ceph/blockreader.ts", import.meta.url).href;
    const script = `
      const { openSnapshotReader } = await import(${JSON.stringify(module)});
      const r = await openSnapshotReader(${JSON.stringify(c.pool)}, ${
      JSON.stringify(img.name)
    }, "s", { env: ${JSON.stringify(c.env)} });
      await r.read(0, 4096);
      console.log(r.pid);
      await new Promise(() => setInterval(() => {}, 1000)); // until killed
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("\n")) {
      const r = await reader.read();
      if (r.done) break;
      out += r.value;
    }
    const pid = Number(out.trim());
    assert(pid > 0 && alive(pid), `qemu-nbd pid from the child: ${out}`);
    const args = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
    const socket = args.find((a) => a.startsWith("--socket="))!.slice("--socket=".length);
    child.kill("SIGKILL"); // no close(), no unload handler
    await child.status;
    await reader.cancel();
    for (let i = 0; i < 100 && qemuNbdPids(img.name).length > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(qemuNbdPids(img.name), [], "qemu-nbd outlived its client");
    // the dead process could not remove its socket directory
    await Deno.remove(socket.slice(0, socket.lastIndexOf("/")), { recursive: true });
  } finally {
    await img.remove(); // would fail for 30 s on a leftover watch
  }
});
