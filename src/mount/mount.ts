/**
 * `backy mount` and `backy umount`: a job (or a base directory of jobs) as a read-only
 * FUSE filesystem, served until it is unmounted or the process gets SIGTERM/SIGINT (then it
 * unmounts itself: lazily if busy, serving open files until they are closed; a second
 * signal ends it at once). While mounted the job's read lock is held, so expiry postpones
 * removing data. See docs/mount.md.
 */
import { basename, dirname, join, resolve } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { exists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { writeProcFile } from "../util/native/procfile.ts";
import { JobDir } from "../repo/jobdir.ts";
import { WorkerPool } from "../backup/pool.ts";
import { BaseView } from "./base.ts";
import { BlockCache } from "./block_cache.ts";
import { FuseDevice, unmount } from "./device.ts";
import { MountFs, type MountRoot, READAHEAD_BYTES } from "./filesystem.ts";
import { JobView } from "./jobview.ts";
import {
  BASE_SUBTYPE,
  isBackyMount,
  JOB_SUBTYPE,
  type MountEntry,
  readMountinfo,
} from "./mountinfo.ts";
import { decodeRequest, NO_REPLY } from "./protocol.ts";
import { BlockSource } from "./reader.ts";

const log = logger("mount");

/**
 * Blocks (4 MiB each) the cache keeps: bounded memory whatever is read. Five hold a sequential
 * reader's current block and the two per Worker loaded ahead: as fast as eight, and the mount
 * stays under 128 MiB (docs/benchmarks.md).
 */
export const CACHE_BLOCKS = 5;

export interface MountOptions {
  /** The job directory, or with `all` the base directory. */
  dir: string;
  mountpoint: string;
  /** Serve every job directory under `dir`, one folder each. */
  all: boolean;
  /** Called once the filesystem is mounted. */
  ready?: (mountpoint: string) => void;
}

/** Whether stat failed because the mount's process is gone. */
function notConnected(e: unknown): boolean {
  return /not connected|os error 107/i.test(errorMessage(e));
}

/** `path` with its parent resolved through symlinks (the path itself may be a dead mount). */
async function canonical(path: string): Promise<string> {
  const abs = resolve(path);
  try {
    return join(await Deno.realPath(dirname(abs)), basename(abs));
  } catch {
    return abs;
  }
}

/** The backy mount on `path`, if any (the last mounted one wins, as the kernel shows it). */
function mountAt(entries: MountEntry[], path: string): MountEntry | undefined {
  return entries.findLast((e) => e.mountpoint === path);
}

async function checkMountpoint(path: string): Promise<string> {
  const mp = await canonical(path);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(mp);
  } catch (e) {
    if (notConnected(e)) {
      throw new BackyError(
        `${mp} is a mount whose process ended (not connected); clean it with 'backy umount ${mp}'`,
      );
    }
    if (e instanceof Deno.errors.NotFound) {
      throw new BackyError(`mount point ${mp} does not exist; create an empty directory first`);
    }
    throw new BackyError(`cannot use mount point ${mp}: ${errorMessage(e)}`);
  }
  if (!info.isDirectory) throw new BackyError(`mount point ${mp} is not a directory`);
  const real = await Deno.realPath(mp);
  const there = mountAt(readMountinfo(), real);
  if (there && isBackyMount(there)) {
    throw new BackyError(`${there.source} is already mounted on ${real}`);
  }
  return real;
}

/** Mounts and serves until unmounted; resolves when the filesystem is gone. */
export async function runMount(opts: MountOptions): Promise<void> {
  const mountpoint = await checkMountpoint(opts.mountpoint);
  let root: MountRoot;
  let fsname: string;
  if (opts.all) {
    try {
      fsname = await Deno.realPath(resolve(opts.dir));
    } catch (e) {
      throw new BackyError(`cannot open base directory ${resolve(opts.dir)}: ${errorMessage(e)}`);
    }
    if (await exists(JobDir.configPath(fsname))) {
      throw new BackyError(`${fsname} is a job directory; mount it without --all`);
    }
    root = { base: new BaseView(fsname, log) };
    const jobs = await root.base.jobs();
    if (jobs.size === 0) log.warning("No job directories found (yet)", { dir: fsname });
  } else {
    const job = await JobDir.open(opts.dir);
    fsname = job.path;
    root = { job: new JobView(job, await job.lockRead(), log) };
    await root.job.entries();
  }
  const closeRoot = () => "job" in root ? root.job.close() : root.base.close();
  let pool: WorkerPool | undefined;
  let dev: FuseDevice | undefined;
  try {
    if (mountpoint === fsname || mountpoint.startsWith(`${fsname}/`)) {
      throw new BackyError(`mount point ${mountpoint} is inside ${fsname}; choose one outside`);
    }
    pool = new WorkerPool();
    const source = new BlockSource(pool, new BlockCache(CACHE_BLOCKS), log, pool.size * 2);
    const fs = new MountFs(root, source, log);
    dev = await FuseDevice.mount({
      mountpoint,
      fsname,
      subtype: opts.all ? BASE_SUBTYPE : JOB_SUBTYPE,
    });
    tuneReadahead(mountpoint);
    log.info(`Mounted ${fsname} on ${mountpoint}; unmount with 'backy umount ${mountpoint}'`);
    const stop = stopOnSignals(mountpoint, dev);
    try {
      opts.ready?.(mountpoint);
      await serve(dev, fs);
    } finally {
      stop();
    }
    log.info(`Unmounted ${mountpoint}`);
  } finally {
    dev?.close();
    pool?.terminate();
    closeRoot();
  }
}

/**
 * The kernel reads ahead 128 KiB at a time on a FUSE mount (its INIT offers no more), so a
 * sequential reader sends 128 KiB requests; a block's worth lets it send 1 MiB requests,
 * several at once. Written before INIT is answered, which keeps the smaller of the two. Root
 * only (sysfs); without it reads just come in smaller pieces.
 */
function tuneReadahead(mountpoint: string): void {
  const entry = mountAt(readMountinfo(), mountpoint);
  if (!entry) return;
  try {
    writeProcFile(`/sys/class/bdi/${entry.dev}/read_ahead_kb`, String(READAHEAD_BYTES / 1024));
  } catch (e) {
    log.debug("Cannot raise read-ahead", { dev: entry.dev, error: errorMessage(e) });
  }
}

/** Reads requests and answers them, many at a time, until the kernel ends the connection. */
async function serve(dev: FuseDevice, fs: MountFs): Promise<void> {
  for (;;) {
    const batch = await dev.next();
    if (!batch) return;
    for (const raw of batch) {
      let req;
      try {
        req = decodeRequest(raw);
      } catch (e) {
        log.error("Malformed FUSE request", { error: errorMessage(e) });
        continue;
      }
      if (NO_REPLY.has(req.opcode)) {
        fs.noReply(req);
        continue;
      }
      const unique = req.unique;
      fs.handle(req).then((r) => {
        try {
          if (!dev.ended) dev.reply(unique, r.error, ...r.parts);
        } catch (e) {
          log.error("FUSE reply failed", { error: errorMessage(e) });
        } finally {
          r.done?.();
        }
      });
    }
    if (fs.destroyed) return;
  }
}

/**
 * SIGTERM/SIGINT: unmount (lazily when busy: open files keep being served until closed);
 * a second signal ends the process at once, leaving users "not connected".
 */
function stopOnSignals(mountpoint: string, dev: FuseDevice): () => void {
  let signalled = false;
  const handler = async () => {
    if (signalled) {
      log.warning("Stopping now; the mount is left not connected until 'backy umount'");
      dev.close();
      Deno.exit(1);
    }
    signalled = true;
    try {
      await unmount(mountpoint, false);
    } catch (e) {
      log.warning(`${errorMessage(e)}; detaching it now, serving open files until closed`);
      try {
        await unmount(mountpoint, true);
      } catch (e2) {
        log.error("Cannot unmount", { error: errorMessage(e2) });
      }
    }
  };
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  for (const s of signals) Deno.addSignalListener(s, handler);
  return () => {
    for (const s of signals) Deno.removeSignalListener(s, handler);
  };
}

/**
 * `backy umount [--lazy] MOUNTPOINT`: unmounts a backy mount (only those), also one whose
 * process was killed ("Transport endpoint is not connected"; detached lazily). Returns
 * what happened, for the user.
 */
export async function runUmount(path: string, lazy: boolean): Promise<string> {
  const mp = await canonical(path);
  const there = mountAt(readMountinfo(), mp);
  if (!there) throw new BackyError(`nothing is mounted on ${mp}`);
  if (!isBackyMount(there)) {
    throw new BackyError(`${mp} is not a backy mount (${there.fstype} from ${there.source})`);
  }
  let dead = false;
  try {
    await Deno.stat(mp);
  } catch (e) {
    dead = notConnected(e);
  }
  await unmount(mp, lazy || dead);
  if (dead) return `Unmounted ${mp} (its process had ended: it was not connected)`;
  return lazy ? `Detached ${mp}; it goes away when no longer busy` : `Unmounted ${mp}`;
}
