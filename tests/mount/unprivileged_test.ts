/**
 * `backy mount` without root, as a real unprivileged user (nobody): the mount goes through
 * the setuid `fusermount3`, which passes /dev/fuse back over a socket; `backy umount` runs
 * `fusermount3 -u`. backy runs from the offline artifact (dist/backy.js) with a copy of the
 * deno binary, as an operator without root would install it. Root sets the stage: Debian
 * makes /dev/fuse usable by everyone (0666); where a container left it root-only, the test
 * grants that for its duration and restores the mode afterwards.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { RUN_FLAGS } from "../../src/util/entry.ts";
import { assertIncludes, ROOT, sh, tempDir, writeImage } from "../helpers.ts";
import { alive, fuseTest, mountsAt, waitFor } from "./harness.ts";

const NOBODY = 65534;

await fuseTest(
  "mount as an unprivileged user through fusermount3; umount through fusermount3 -u",
  { fusermount3: "fuse3", setpriv: "util-linux" },
  async () => {
    const dir = await tempDir();
    await Deno.chmod(dir, 0o755);
    const devMode = (await Deno.stat("/dev/fuse")).mode! & 0o777;
    try {
      const build = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", join(ROOT, "dist.ts"), "--out", join(dir, "dist")],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(build.code, 0, new TextDecoder().decode(build.stderr));
      await Deno.mkdir(join(dir, "bin"));
      await Deno.copyFile(Deno.execPath(), join(dir, "bin", "deno"));
      await Deno.chmod(join(dir, "bin", "deno"), 0o755);
      await Deno.chmod(join(dir, "dist", "backy.js"), 0o755);
      const home = join(dir, "home");
      await Deno.mkdir(home);
      await writeImage(join(home, "src.img"), [3, 0, 4]);
      await Deno.mkdir(join(home, "mnt"));
      await sh("chown", ["-R", `${NOBODY}:${NOBODY}`, home]);
      if ((devMode & 0o006) !== 0o006) await Deno.chmod("/dev/fuse", 0o666);

      const asNobody = (script: string) =>
        sh("setpriv", [
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          "--clear-groups",
          "env",
          `HOME=${home}`,
          `DENO_DIR=${join(home, ".deno")}`,
          `PATH=${join(dir, "bin")}:/usr/bin:/bin`,
          "sh",
          "-c",
          `cd ${home} && backy() { deno run ${RUN_FLAGS.join(" ")} ${
            join(dir, "dist", "backy.js")
          } "$@"; }\n${script}`,
        ]);
      const mp = join(home, "mnt");
      const up = await asNobody(
        `backy -b job init --backend chunked file ${join(home, "src.img")} >/dev/null && ` +
          "backy -b job backup daily >/dev/null && backy -b job mount -d mnt",
      );
      assertEquals(up.code, 0, up.err);
      const pid = Number(/\(pid (\d+),/.exec(up.out)?.[1]);
      assertEquals(await mountsAt(mp), [`fuse.backy ${join(home, "job")}`]);
      try {
        const opts = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")
          .find((l) => l.includes(` ${mp} `))!;
        assertIncludes(opts, `user_id=${NOBODY},group_id=${NOBODY}`);
        const read = await asNobody("ls -n mnt && cmp mnt/last src.img && echo same");
        assertEquals(read.code, 0, read.err);
        assertIncludes(read.out, `-r-------- 1 ${NOBODY} ${NOBODY} ${3 * 4 * 1024 * 1024} `);
        assertIncludes(read.out, "same\n");
        // Other users (root included) are kept out: no allow_other.
        const root = await sh("ls", [mp]);
        assert(root.code !== 0);
        assertIncludes(root.err, "Permission denied");
        const down = await asNobody("backy umount mnt");
        assertEquals(down.code, 0, down.err);
        assertEquals(down.out, `Unmounted ${mp}\n`);
        assertEquals(await mountsAt(mp), []);
        await waitFor("the mount process to end", async () => !(await alive(pid)));
      } finally {
        if ((await mountsAt(mp)).length) await sh("umount", ["-l", mp]);
      }
    } finally {
      await Deno.chmod("/dev/fuse", devMode);
      await Deno.remove(dir, { recursive: true });
    }
  },
);
