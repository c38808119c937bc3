/** Which backend suits a new job directory (design D2): cow where it can reflink, else chunked. */
import { join } from "node:path";
import { removeIfExists } from "../util/fs.ts";
import { run } from "../util/proc.ts";
import type { Backend } from "../repo/revision.ts";

/** cow where the directory's filesystem can reflink, else chunked. */
export async function probeBackend(dir: string): Promise<Backend> {
  const a = join(dir, `.reflink-probe-${Deno.pid}`);
  const b = `${a}.clone`;
  try {
    await Deno.writeFile(a, new Uint8Array(4096).fill(1));
    const cp = Deno.env.get("BACKY_CP") ?? "cp";
    const r = await run(cp, ["--reflink=always", a, b]);
    return r.code === 0 ? "cow" : "chunked";
  } finally {
    await removeIfExists(a);
    await removeIfExists(b);
  }
}
