/**
 * Rollback to backy 2.1 (docs/upgrade.md): a cow job directory written by this version,
 * read with 2.1's rules (spec 2.1-2.6) by an independent reader here — PyYAML-style YAML 1.1
 * (timestamps must be real timestamps), only the fields 2.1 reads, the raw images and the
 * `last`/`last.rev` links it follows.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import {
  backy,
  BLOCK,
  expectOk,
  filesEqual,
  initJob,
  patchFile,
  sh,
  tempDir,
  writeImage,
} from "../helpers.ts";

interface Rev21 {
  uuid: string;
  timestamp: Date;
  parent: string | null;
  stats: { bytes_written: number; duration?: number };
  tags: string[];
}

/** 2.1's Revision.load: YAML 1.1, the five fields it uses, with 2.1's types. */
function load21(text: string, file: string): Rev21 {
  const d = YAML.parse(text, { schema: "yaml-1.1" }) as Record<string, unknown>;
  assert(typeof d.uuid === "string", `${file}: uuid is a string`);
  assert(d.timestamp instanceof Date, `${file}: timestamp is a YAML timestamp, not a string`);
  assert(d.parent === null || typeof d.parent === "string", `${file}: parent`);
  const stats = d.stats as Record<string, unknown>;
  assert(Number.isInteger(stats.bytes_written), `${file}: stats.bytes_written is an int`);
  assert(stats.duration === undefined || typeof stats.duration === "number", `${file}: duration`);
  assert(Array.isArray(d.tags) && d.tags.every((t) => typeof t === "string"), `${file}: tags`);
  return d as unknown as Rev21;
}

Deno.test("a cow job written by this version reads as a backy 2.1 job directory", async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, "vm.img");
    const job = join(dir, "job");
    await writeImage(src, [1, 0, 2, 3]);
    await initJob(job, src, "cow");
    expectOk(await backy(["-b", job, "backup", "daily,weekly"]));
    const v1 = join(dir, "v1.img");
    await Deno.copyFile(src, v1);
    await patchFile(src, BLOCK + 17, 4096, 9);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const v2 = join(dir, "v2.img");
    await Deno.copyFile(src, v2);
    // A failed backup leaves an incomplete revision, as 2.1's crashes did.
    await Deno.chmod(src, 0o000);
    const failed = await backy(["-b", job, "backup", "daily"], {
      wrap: Deno.uid() === 0 ? ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] : [],
    });
    await Deno.chmod(src, 0o644);
    assertEquals(failed.code, 1);

    // 2.1's job config: a mapping with `type` and the source's keys (`filename`).
    const config = YAML.parse(await Deno.readTextFile(join(job, "config")), { schema: "yaml-1.1" });
    assertEquals([config.type, config.filename], ["file", src]);

    // 2.1's scan: every `*.rev` but `last.rev`, each with an image `<uuid>` beside it.
    const revs: Rev21[] = [];
    for await (const e of Deno.readDir(job)) {
      if (!e.name.endsWith(".rev") || e.name === "last.rev") continue;
      const r = load21(await Deno.readTextFile(join(job, e.name)), e.name);
      assertEquals(`${r.uuid}.rev`, e.name);
      assert((await Deno.stat(join(job, r.uuid))).isFile, `image ${r.uuid}`);
      revs.push(r);
    }
    revs.sort((a, b) => a.timestamp.getTime() - b.timestamp.getTime());
    const complete = revs.filter((r) => r.stats.duration !== undefined);
    // Two complete revisions; the failed backup is incomplete (2.1: `0 s`, removed next time).
    assertEquals(complete.length, 2);
    assert(revs.length >= 2);
    assertEquals(complete.map((r) => r.tags.sort()), [["daily", "weekly"], ["daily"]]);
    assertEquals(complete[0].parent, null);
    assertEquals(complete[1].parent, complete[0].uuid);
    for (const r of revs) {
      assert(r.parent === null || revs.some((p) => p.uuid === r.parent), "parent exists");
    }

    // `last` and `last.rev`: relative links to the newest complete revision; `dd if=last`
    // restores it (the 2.1 README's recipe).
    assertEquals(await Deno.readLink(join(job, "last")), complete[1].uuid);
    assertEquals(await Deno.readLink(join(job, "last.rev")), `${complete[1].uuid}.rev`);
    const out = join(dir, "dd.img");
    const dd = await sh("dd", [`if=${join(job, "last")}`, `of=${out}`, "bs=4096k", "status=none"]);
    assertEquals(dd.code, 0, dd.err);
    assert(await filesEqual(out, v2), "dd if=last gives the image as backed up");
    assert(await filesEqual(join(job, complete[0].uuid), v1), "the older image, as it was");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
