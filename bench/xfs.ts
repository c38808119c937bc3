/**
 * The XFS filesystem with reflink that the cow benchmarks write to (root only): a loop
 * device on a sparse file of the local disk, attached with direct I/O
 * (`losetup --direct-io=on`). A buffered loop device caches every block twice, once for
 * XFS and once for the file behind it, and `sync` leaves the file's dirty pages to be
 * written back during the next timed step; with direct I/O the loop device passes reads and
 * writes to the disk the way a real XFS device would (measured in docs/benchmarks.md: a cow
 * restore took 4.42-4.59 s instead of 4.90-6.34 s through the buffered loop).
 */

/** A mounted XFS loop filesystem and how to take it down again. */
export interface XfsMount {
  dir: string;
  device: string;
  /** Whether the kernel really uses direct I/O for the loop device. */
  directIo: boolean;
  unmount(): Promise<void>;
}

async function run(cmd: string, ...args: string[]): Promise<string> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
  return new TextDecoder().decode(r.stdout).trim();
}

/** Makes a `bytes`-sized XFS (reflink) on a direct-I/O loop device over `file` at `dir`. */
export async function mountXfs(file: string, dir: string, bytes: number): Promise<XfsMount> {
  await Deno.mkdir(dir, { recursive: true });
  await run("truncate", "-s", String(bytes), file);
  const device = await run("losetup", "--direct-io=on", "--find", "--show", file);
  try {
    await run("mkfs.xfs", "-q", "-m", "reflink=1", device);
    await run("mount", device, dir);
  } catch (e) {
    await run("losetup", "-d", device).catch(() => {});
    throw e;
  }
  const flag = await Deno.readTextFile(`/sys/block/${device.slice(5)}/loop/dio`).catch(() => "0");
  const directIo = flag.trim() === "1";
  if (!directIo) console.error(`bench: ${device} fell back to buffered I/O (no O_DIRECT)`);
  let mounted = true;
  return {
    dir,
    device,
    directIo,
    async unmount() {
      if (!mounted) return;
      mounted = false;
      await run("umount", dir);
      await run("losetup", "-d", device).catch(() => {}); // autoclear may have detached it
      await Deno.remove(file).catch(() => {});
    },
  };
}
