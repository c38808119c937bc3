/**
 * The README's Ceph recipe through a mount, against the test cluster: `rbd import
 * MOUNT/weekly POOL/IMAGE` of a chunked revision, compared byte for byte with the revision
 * (`rbd export`). Needs root (FUSE) and the cluster; elsewhere ignored with the reason.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { join } from "node:path";
import { assertSameBytes, cephCluster, rbdCli, removeImage, uniqueName } from "../ceph/cluster.ts";
import { backy, BLOCK, expectOk, initJob, revisions, tempDir, writeImage } from "../helpers.ts";
import { fuseUnavailable, mountDaemon, unmountOk } from "./harness.ts";

const cluster = await cephCluster();
const why = "ignored" in cluster ? cluster.ignored : await fuseUnavailable();
const NAME = "mount recipe: rbd import MOUNT/weekly POOL/IMAGE equals the revision";

if (why || "ignored" in cluster) {
  Deno.test({ name: `${NAME} (IGNORED: ${why})`, ignore: true, fn() {} });
} else {
  Deno.test({ name: NAME, sanitizeResources: false, sanitizeOps: false }, async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const src = join(dir, "src.img");
    await writeImage(src, [1, 0, 2], 2 * BLOCK + 12345);
    const job = join(dir, "job");
    await initJob(job, src, "chunked");
    expectOk(await backy(["-b", job, "backup", "daily,weekly"]));
    const weekly = await Deno.readFile(src);
    await writeImage(src, [7, 8, 9]);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    assertEquals((await revisions(job)).length, 2);
    const image = `${cluster.pool}/${uniqueName("mount")}`;
    const m = await mountDaemon(job, mp);
    try {
      const imp = await new Deno.Command("rbd", {
        args: ["import", "--no-progress", join(mp, "weekly"), image],
        env: cluster.env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(imp.code, 0, new TextDecoder().decode(imp.stderr));
      const exported = await rbdCli(cluster, ["export", "--no-progress", image, "-"]);
      assertSameBytes(exported, weekly, "rbd image imported from the mount");
      await unmountOk(m);
    } finally {
      await m.stop();
      await removeImage(cluster, image);
      await Deno.remove(dir, { recursive: true });
    }
  });
}
