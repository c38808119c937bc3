// Read-ahead hints for source files (util/native/readahead.ts) on a real file: pages that
// were dropped from the page cache are resident after the hint, without a read(2).
import { ok } from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { readAhead } from "../../src/util/native/readahead.ts";
import { sh } from "../helpers.ts";

const MiB = 1024 * 1024;

async function residentBytes(path: string): Promise<number> {
  const r = await sh("fincore", ["--bytes", "--noheadings", "--output", "RES", path]);
  return Number(r.out.trim());
}

const tools = (await sh("sh", ["-c", "command -v fincore && command -v dd"])).code === 0;
const reason = tools ? "" : " (ignored: needs fincore, Debian package util-linux-extra)";

Deno.test({
  name: `readAhead: the hinted range of a file lands in the page cache, the rest does not${reason}`,
  ignore: !tools,
  async fn() {
    // /var/tmp: on disk where /tmp may be tmpfs (whose pages cannot be dropped).
    const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "backy-test-" });
    try {
      const path = join(dir, "source");
      await Deno.writeFile(path, new Uint8Array(64 * MiB).fill(7));
      // Written back, then dropped from the cache (dd's nocache with count=0: the whole file).
      await sh("sync", [path]);
      await sh("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
      const before = await residentBytes(path);
      ok(before < 8 * MiB, `the file was not dropped from the cache (${before} bytes resident)`);
      const fd = fs.openSync(path, "r");
      try {
        readAhead(fd, 0, 0); // nothing to do
        readAhead(-1, 0, MiB); // a bad descriptor: best effort, no error
        readAhead(fd, 16 * MiB, 16 * MiB);
        // The hint only starts the reads; give them a moment to finish.
        let resident = 0;
        for (let i = 0; i < 50 && resident < 16 * MiB; i++) {
          await new Promise((r) => setTimeout(r, 20));
          resident = await residentBytes(path);
        }
        ok(resident >= 16 * MiB, `only ${resident} bytes resident after the hint`);
        ok(resident < 48 * MiB, `${resident} bytes resident: more than the hint asked for`);
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
