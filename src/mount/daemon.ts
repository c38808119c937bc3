/**
 * `backy mount -d`: the mount runs in a child process (the same command without -d, logging
 * to a file); the child says "ready" on its stdout once mounted, and from then on writes
 * nothing to the terminal, so the parent can exit and the child lives on.
 */
import { BackyError } from "../util/errors.ts";
import { libc } from "../util/native/libc.ts";
import { closeRaw, O_RDWR, openRaw } from "../util/native/open.ts";

/** The line a daemon child writes when mounted. */
export const READY_LINE = "ready";

/** In the child: tells the parent it is mounted, then points stdout and stderr at /dev/null. */
export function announceReady(): void {
  const lib = libc("running in the background");
  const devnull = openRaw("/dev/null", O_RDWR);
  // stderr first: after "ready" the parent stops reading, and a write would fail.
  lib.dup2(devnull, 2);
  const line = new TextEncoder().encode(`${READY_LINE}\n`);
  let off = 0;
  while (off < line.length) off += Deno.stdout.writeSync(line.subarray(off));
  lib.dup2(devnull, 1);
  closeRaw(devnull);
}

/**
 * In the parent: runs the child and waits until it is mounted (returns its pid) or has
 * failed (throws its error message).
 */
export async function startInBackground(cmd: string[]): Promise<number> {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const errReader = child.stderr.getReader();
  const errText = (async () => {
    let text = "";
    for (;;) {
      const { value, done } = await errReader.read();
      if (done) return text;
      text += new TextDecoder().decode(value);
    }
  })();
  const reader = child.stdout.getReader();
  const dec = new TextDecoder();
  let out = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += dec.decode(value, { stream: true });
    if (out.split("\n").includes(READY_LINE)) {
      // Not waiting for the pipes to end: the child's runtime keeps copies of them open.
      await reader.cancel();
      await errReader.cancel();
      child.unref();
      return child.pid;
    }
  }
  const status = await child.status;
  const err = (await errText).trim().split("\n").filter((l) => l).at(-1) ?? "";
  throw new BackyError(
    err.replace(/^Error: /, "") || `the background mount exited with status ${status.code}`,
  );
}
