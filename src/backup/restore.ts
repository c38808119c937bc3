/**
 * `backy restore [-r REV] TARGET` (spec 3.7): a file, a block device, `-` (stdout) or
 * `rbd:POOL/IMAGE` (target.ts says how each is opened safely). Every block is hash-checked
 * on its way out; a corrupt block stops the restore, naming it, and no wrong byte lands.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import { alignedBuffer } from "../util/native/buffer.ts";
import { type Progress, startProgress } from "../util/progress.ts";
import { BLOCK_SIZE, blockCount } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import type { Revision } from "../repo/revision.ts";
import { type RevisionData, storeFor } from "../store/store.ts";
import { GET_BUFFER_SIZE } from "../store/in_place.ts";
import { Rbd } from "../sources/ceph/rbd.ts";
import { pipeline, WorkerPool } from "./pool.ts";
import { abortTarget, finishTarget, openTarget, type RestoreTarget } from "./target.ts";

const log = logger("restore");

export interface RestoreOptions {
  force: boolean;
}

/** Where block `i` of a revision is, its length, and the digest its content must match. */
function blockRequest(data: RevisionData, i: number) {
  const offset = i * BLOCK_SIZE;
  return {
    offset,
    length: Math.min(BLOCK_SIZE, data.size - offset),
    store: data.ref,
    digest: data.index ? (data.index.isZero(i) ? null : data.index.digest(i).slice()) : undefined,
  };
}

/**
 * Every block of a revision, in order, into `write` (zero blocks as a shared zero buffer).
 * Block buffers travel to a Worker and back, and are reused once `write` is done with them
 * instead of a fresh 4 MiB allocation per block (page faults on new memory are expensive).
 * They are page-aligned: the kernel's copies into pipes (rbd) run at full speed.
 */
async function streamBlocks(
  pool: WorkerPool,
  data: RevisionData,
  write: (bytes: Uint8Array) => Promise<void>,
  progress: Progress,
): Promise<void> {
  const zeros = new Uint8Array(BLOCK_SIZE);
  const spare: Uint8Array[] = [];
  // Two blocks per Worker in flight keep both busy; each holds a 4 MiB buffer here.
  await pipeline(blockCount(data.size), pool.size * 2, (i) => {
    const req = blockRequest(data, i);
    // With room to decode a chunk in place (no frame buffer in the Worker).
    const into = req.digest !== null ? spare.pop() ?? alignedBuffer(GET_BUFFER_SIZE) : undefined;
    return pool.read({ ...req, into });
  }, async (i, r) => {
    const bytes = r.data ?? zeros.subarray(0, blockRequest(data, i).length);
    await write(bytes);
    progress.advance(bytes.length);
    if (r.data) spare.push(new Uint8Array(r.data.buffer, r.data.byteOffset, GET_BUFFER_SIZE));
  });
}

export async function restore(
  job: JobDir,
  rev: Revision,
  target: string,
  opts: RestoreOptions,
): Promise<{ bytes: number }> {
  if (target.startsWith("rbd:")) return await restoreToRbd(job, rev, target.slice(4), opts);
  const readLock = await job.lockRead();
  const pool = new WorkerPool();
  let out: RestoreTarget | undefined;
  let progress: Progress | undefined;
  try {
    const data = await storeFor(job, rev.backend).open(rev, { unchecked: opts.force });
    out = await openTarget(target, data.size, opts);
    if (target !== "-") log.info("Restoring revision", { id: rev.id, target, size: data.size });
    progress = startProgress({ command: "restore", phase: "restoring", total: data.size });
    if (out.kind === "file") await Deno.truncate(out.tmp, data.size);
    if (out.kind === "stream") {
      await streamBlocks(pool, data, out.write, progress);
    } else {
      // The Workers write into the file or device themselves.
      const dest = out.kind === "file"
        ? { path: out.tmp, writeZeros: false }
        : { path: out.path, writeZeros: true };
      await pipeline(
        blockCount(data.size),
        pool.size * 3,
        (i) => pool.read({ ...blockRequest(data, i), out: dest }),
        (i) => progress!.advance(blockRequest(data, i).length),
      );
    }
    await pool.closeFiles();
    await finishTarget(out);
    if (target !== "-") log.info("Restore complete", { id: rev.id, bytes: data.size });
    return { bytes: data.size };
  } catch (e) {
    if (out) await abortTarget(out);
    if (e instanceof BackyError) throw e;
    throw new BackyError(`restore of ${rev.id} failed: ${errorMessage(e)}`, { cause: e });
  } finally {
    progress?.finish();
    pool.terminate();
    readLock.release();
  }
}

/**
 * Streams a revision into a new Ceph image through `rbd import -`. The data goes into a
 * temporary image first; only a complete import replaces (with --force) an existing one.
 */
async function restoreToRbd(
  job: JobDir,
  rev: Revision,
  spec: string,
  opts: RestoreOptions,
): Promise<{ bytes: number }> {
  const parts = spec.split("/");
  if (parts.length !== 2 || !parts[0] || !parts[1] || spec.includes("@")) {
    throw new BackyError(`restore target rbd:${spec} must be rbd:POOL/IMAGE`);
  }
  const rbd = new Rbd();
  const existing = await rbd.info(spec);
  if (existing && !opts.force) {
    throw new BackyError(`rbd image ${spec} exists; use --force to replace it`);
  }
  const tmp = `${spec}.backy-restore-${Deno.pid}`;
  const readLock = await job.lockRead();
  const pool = new WorkerPool();
  try {
    const data = await storeFor(job, rev.backend).open(rev);
    log.info("Restoring revision into Ceph", { id: rev.id, image: spec, size: data.size });
    const progress = startProgress({ command: "restore", phase: "restoring", total: data.size });
    try {
      await rbd.importFrom(tmp, (feed) => streamBlocks(pool, data, feed, progress));
    } finally {
      progress.finish();
    }
    if (existing) await rbd.remove(spec);
    await rbd.rename(tmp, spec);
    log.info("Restore complete", { id: rev.id, image: spec, bytes: data.size });
    return { bytes: data.size };
  } catch (e) {
    if (await rbd.info(tmp).catch(() => undefined)) await rbd.remove(tmp).catch(() => {});
    if (e instanceof BackyError) throw e;
    throw new BackyError(`restore of ${rev.id} into rbd:${spec} failed: ${errorMessage(e)}`, {
      cause: e,
    });
  } finally {
    pool.terminate();
    readLock.release();
  }
}
