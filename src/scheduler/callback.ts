/**
 * Operator hooks run by the scheduler (`backup-completed-callback` as backy 2.5 ran it, and
 * `backup-failed-callback`): `<program> <job>` with a document on stdin. A hook can fail,
 * hang or spawn children; none of that may harm the scheduler, so every hook runs in its own
 * process group, bounded by a timeout after which the whole group is killed.
 */
import { errorMessage } from "../util/errors.ts";

/** How a hook ended. */
export interface HookResult {
  /** Exit code when it exited. */
  code?: number;
  /** Signal that ended it. */
  signal?: string;
  /** It ran past the timeout and was killed. */
  timedOut: boolean;
  /** Its output (stdout then stderr), cut to a few KiB. */
  output: string;
  /** Why it could not be started. */
  spawnError?: string;
}

/** Output kept from a hook for the log. */
const KEEP_BYTES = 4096;
/** After SIGTERM, the group gets this long before SIGKILL. */
const KILL_GRACE_MS = 2000;

function killGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal); // negative pid: the whole process group (setsid by `detached`)
  } catch {
    // already gone
  }
}

/** Reads a stream to the end, keeping its first KEEP_BYTES; resolves early when cancelled. */
async function drain(stream: ReadableStream<Uint8Array>, stop: Promise<void>): Promise<string> {
  const reader = stream.getReader();
  const kept: Uint8Array[] = [];
  let size = 0;
  void stop.then(() => reader.cancel().catch(() => {}));
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (size < KEEP_BYTES) {
        kept.push(value.subarray(0, KEEP_BYTES - size));
        size += Math.min(value.length, KEEP_BYTES - size);
      }
    }
  } catch {
    // cancelled
  }
  const all = new Uint8Array(size);
  let off = 0;
  for (const k of kept) {
    all.set(k, off);
    off += k.length;
  }
  return new TextDecoder().decode(all);
}

/**
 * Runs `program args...` with `input` on stdin. Never throws. A hook that does not read its
 * stdin gets EPIPE, which is no failure of ours; one still running after `timeoutMs` gets
 * SIGTERM, then SIGKILL, as a process group (children it left behind included).
 */
export async function runHook(
  program: string,
  args: string[],
  input: string,
  timeoutMs: number,
): Promise<HookResult> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
  } catch (e) {
    return { timedOut: false, output: "", spawnError: errorMessage(e) };
  }
  let timedOut = false;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child.pid, "SIGTERM");
    killTimer = setTimeout(() => killGroup(child.pid, "SIGKILL"), KILL_GRACE_MS);
  }, timeoutMs);
  // Grandchildren may keep the pipes open after the hook itself ended: stop reading then.
  let ended!: () => void;
  const readersStop = new Promise<void>((resolve) => (ended = resolve));
  const outputs = Promise.all([drain(child.stdout, readersStop), drain(child.stderr, readersStop)]);
  const w = child.stdin.getWriter();
  const feed = (async () => {
    try {
      await w.write(new TextEncoder().encode(input));
      await w.close();
    } catch {
      // the hook did not read its input (EPIPE) or was killed
    }
  })();
  const status = await child.status;
  clearTimeout(timer);
  if (killTimer !== undefined) clearTimeout(killTimer);
  if (timedOut) killGroup(child.pid, "SIGKILL"); // leftovers of a killed hook
  const grace = setTimeout(ended, 500);
  const [out, err] = await outputs;
  clearTimeout(grace);
  ended();
  await w.abort().catch(() => {}); // a leftover grandchild holding stdin must not block us
  await feed;
  const result: HookResult = { timedOut, output: (out + err).trim() };
  if (status.signal) result.signal = status.signal;
  else result.code = status.code;
  return result;
}
