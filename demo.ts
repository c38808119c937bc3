/**
 * The built-in demo (`deno task demo`): makes a sample disk image, backs it up three
 * times with changes in between, shows `status`, restores an older revision and proves it
 * identical to the image as it was then.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";

const mod = new URL("./mod.ts", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "backy-demo-" });
const image = join(dir, "vm-disk.img");
const job = join(dir, "backup", "vm-disk");
const MiB = 1024 * 1024;

async function backy(...args: string[]): Promise<string> {
  console.log(`\n$ backy ${args.join(" ")}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", mod, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  Deno.stdout.writeSync(out.stdout);
  if (out.code !== 0) {
    console.error(`backy exited with ${out.code}`);
    Deno.exit(1);
  }
  return text;
}

/** Writes `mib` MiB of pseudo-random "data" at `offsetMiB` into the image. */
async function write(offsetMiB: number, mib: number, seed: number) {
  const f = await Deno.open(image, { write: true, create: true });
  const buf = new Uint8Array(mib * MiB);
  crypto.getRandomValues(buf.subarray(0, 65536));
  for (let i = 65536; i < buf.length; i += 65536) buf.copyWithin(i, 0, 65536);
  buf[0] = seed;
  await f.seek(offsetMiB * MiB, Deno.SeekMode.Start);
  await f.write(buf);
  f.close();
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256").update(await Deno.readFile(path)).digest("hex");
}

console.log(`Demo directory: ${dir}`);
console.log("Creating a 256 MiB sample disk image with 40 MiB of data (the rest stays empty)");
await write(0, 8, 1);
await write(100, 32, 2);
await Deno.truncate(image, 256 * MiB);

await backy("-b", job, "init", "file", image);
await backy("-b", job, "backup", "daily,weekly");
const firstHash = await sha256(image);

console.log("\n# The VM writes 4 MiB at 50 MiB and 8 MiB at 200 MiB");
await write(50, 4, 3);
await write(200, 8, 4);
await backy("-b", job, "backup", "daily");

console.log("\n# ... and overwrites its first 8 MiB");
await write(0, 8, 5);
await backy("-b", job, "backup", "daily");

await backy("-b", job, "status");

const restored = join(dir, "restored-first.img");
await backy("-b", job, "restore", "-r", "weekly", restored);
const restoredHash = await sha256(restored);
console.log(`\nsha256 of the image at the first backup: ${firstHash}`);
console.log(`sha256 of the restored 'weekly' revision: ${restoredHash}`);
if (restoredHash !== firstHash) {
  console.error("MISMATCH: the restored revision differs from the original image");
  Deno.exit(1);
}
console.log("Identical. The demo files are in " + dir + " (remove them when done).");
