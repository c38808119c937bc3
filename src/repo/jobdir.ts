/**
 * A job directory (spec 2.1): `config`, `<id>.rev` + `<id>.index` + data per revision,
 * `last`/`last.rev` links, `chunks/`, and the lock files `.backup` and `.purge`.
 */
import { join, resolve } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { atomicWrite, exists, isTempName, removeIfExists, tempName } from "../util/fs.ts";
import { Lock } from "../util/lock.ts";
import { logger } from "../util/log.ts";
import { judgeOwnership } from "../util/trust.ts";
import { BlockIndex } from "./index_file.ts";
import { type JobDirConfig, parseJobConfig, serializeJobConfig } from "./jobconfig.ts";
import { parseRevision, type Revision, serializeRevision } from "./revision.ts";

export interface Scan {
  /** Oldest first (timestamp, then id). */
  revisions: Revision[];
  /** `.rev` files that could not be read: reported, never deleted. */
  problems: string[];
}

const log = logger("jobdir");

/** Refuses files others could have written (util/trust.ts); warns when others can read. */
async function trust(what: string, path: string): Promise<void> {
  const warning = judgeOwnership(what, path, await Deno.stat(path));
  if (warning) log.warning(warning);
}

export class JobDir {
  private constructor(readonly path: string, readonly config: JobDirConfig) {}

  static configPath(dir: string): string {
    return join(dir, "config");
  }

  /** Opens an existing job directory; a directory without `config` is not one. */
  static async open(dir: string): Promise<JobDir> {
    let path: string;
    try {
      path = await Deno.realPath(resolve(dir));
    } catch (e) {
      throw new BackyError(`cannot open job directory ${resolve(dir)}: ${errorMessage(e)}`);
    }
    const cfgFile = JobDir.configPath(path);
    let text: string;
    try {
      text = await Deno.readTextFile(cfgFile);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new BackyError(
          `${path} is not a backy job directory (no config file); create one with 'backy init'`,
        );
      }
      throw new BackyError(`cannot read ${cfgFile}: ${errorMessage(e)}`);
    }
    const config = parseJobConfig(text, cfgFile);
    await trust("job directory", path);
    await trust("job config", cfgFile);
    return new JobDir(path, config);
  }

  /** Writes the job's `config`, readable by its owner only (it may hold a Consul token). */
  static async writeConfig(dir: string, cfg: Omit<JobDirConfig, "settings">): Promise<void> {
    await atomicWrite(JobDir.configPath(dir), serializeJobConfig(cfg), 0o600);
  }

  revPath(id: string): string {
    return join(this.path, `${id}.rev`);
  }
  indexPath(id: string): string {
    return join(this.path, `${id}.index`);
  }
  imagePath(id: string): string {
    return join(this.path, id);
  }
  get chunksDir(): string {
    return join(this.path, "chunks");
  }

  /** Exclusive, non-blocking: one backup (or expire) per job at a time. */
  lockBackup(): Promise<Lock> {
    return Lock.tryAcquire(
      join(this.path, ".backup"),
      true,
      (holder) =>
        `another backup of ${this.path} is running (lock ${
          join(this.path, ".backup")
        } is held${holder})`,
    );
  }

  /** Shared: readers and backups; expiry/GC take it exclusively before deleting data. */
  lockRead(): Promise<Lock> {
    return Lock.acquireShared(join(this.path, ".purge"));
  }

  lockPurge(): Promise<Lock> {
    return Lock.tryAcquire(
      join(this.path, ".purge"),
      true,
      (holder) => `a restore or mount of ${this.path} is reading${holder}; data removal postponed`,
    );
  }

  scan(): Promise<Scan> {
    return scanRevisions(this.path);
  }

  async writeRevision(rev: Revision, mode: number): Promise<void> {
    await atomicWrite(this.revPath(rev.id), serializeRevision(rev), mode);
  }

  /** The index's second copy, written beside it (index files are small). */
  mirrorPath(id: string): string {
    return join(this.path, `${id}.index.mirror`);
  }

  /**
   * A revision's index; undefined when it has none (legacy 2.1 revisions). A damaged or lost
   * index is healed from its mirror (and the other way round); when both are damaged it is
   * a BackyError naming the file.
   */
  async readIndex(id: string): Promise<BlockIndex | undefined> {
    const main = await readIndexFile(this.indexPath(id));
    if (main.index) {
      await this.#healMirror(id, main.index);
      return main.index;
    }
    const mirror = await readIndexFile(this.mirrorPath(id));
    if (mirror.index) {
      log.warning("Index file damaged or missing; restored from its mirror", {
        file: this.indexPath(id),
        problem: main.error ? errorMessage(main.error) : "missing",
      });
      await atomicWrite(this.indexPath(id), mirror.index.encode(), 0o440).catch((e) =>
        log.warning("Cannot rewrite the index", { error: errorMessage(e) })
      );
      return mirror.index;
    }
    if (!main.error && !mirror.error) return undefined; // neither exists: a legacy revision
    throw main.error ?? mirror.error;
  }

  /**
   * A mirror that is missing (revisions of 3.0) or damaged while the index is fine:
   * rewritten, best effort (a read-only job directory keeps working without).
   */
  async #healMirror(id: string, index: BlockIndex): Promise<void> {
    const mirror = await readIndexFile(this.mirrorPath(id));
    if (mirror.index || (!mirror.error && !(await exists(this.revPath(id))))) return;
    if (mirror.error) {
      log.warning("Index mirror damaged; rewritten from the index", {
        file: this.mirrorPath(id),
        problem: errorMessage(mirror.error),
      });
    }
    await atomicWrite(this.mirrorPath(id), index.encode(), 0o440).catch(() => {});
  }

  /** Removes a revision's index and its mirror (a failed backup's own). */
  async removeIndex(id: string): Promise<void> {
    await removeIfExists(this.indexPath(id));
    await removeIfExists(this.mirrorPath(id));
  }

  /** Writes the index and its mirror, each durably (temp file, fsync, rename). */
  async writeIndex(id: string, index: BlockIndex): Promise<void> {
    const bytes = index.encode();
    await atomicWrite(this.indexPath(id), bytes, 0o440);
    await atomicWrite(this.mirrorPath(id), bytes, 0o440);
  }

  /**
   * Removes exactly this revision's files (never a glob: ids may prefix other ids): the
   * `.rev` first, so a revision whose data is half gone is never listed as complete, then
   * the index, then `dataFiles` (the store's own files of this revision).
   */
  async removeRevision(id: string, dataFiles: string[] = []): Promise<void> {
    await removeIfExists(this.revPath(id));
    await removeIfExists(this.indexPath(id));
    await removeIfExists(this.mirrorPath(id));
    for (const file of dataFiles) await removeIfExists(file);
    for await (const entry of Deno.readDir(this.path)) {
      if (isTempName(entry.name) && entry.name.startsWith(`.${id}`)) {
        const rest = entry.name.slice(id.length + 1);
        if (/^(\.rev|\.index|\.index\.mirror)?\.tmp-/.test(rest)) {
          await removeIfExists(join(this.path, entry.name));
        }
      }
    }
    await this.dropDanglingLinks();
  }

  /**
   * Metadata left behind by interrupted commands (call under both job locks): indexes and
   * mirrors whose `.rev` is gone (an expiry killed between removals) and temp files of
   * atomic writes. Returns the names removed.
   */
  async removeLeftovers(): Promise<string[]> {
    const removed: string[] = [];
    for await (const e of Deno.readDir(this.path)) {
      let orphan = false;
      const m = /^(.+?)\.(index|index\.mirror)$/.exec(e.name);
      if (m && e.isFile && !e.name.startsWith(".")) orphan = !(await exists(this.revPath(m[1])));
      if (orphan || isTempName(e.name)) {
        if (await removeIfExists(join(this.path, e.name))) removed.push(e.name);
      }
    }
    if (removed.length) {
      log.info("Removed leftovers of interrupted commands", { files: removed.join(",") });
    }
    return removed;
  }

  /**
   * `last` -> the revision's image (`image`, when its store has one; else no `last`) and
   * `last.rev` -> `<id>.rev`, replaced atomically.
   */
  async setLast(id: string, image: string | undefined): Promise<void> {
    const links: [string, string | undefined][] = [
      ["last", image],
      ["last.rev", `${id}.rev`],
    ];
    for (const [name, target] of links) {
      const path = join(this.path, name);
      if (!target) {
        await removeIfExists(path);
        continue;
      }
      const tmp = tempName(path);
      await Deno.symlink(target, tmp);
      await Deno.rename(tmp, path);
    }
  }

  private async dropDanglingLinks(): Promise<void> {
    for (const name of ["last", "last.rev"]) {
      const path = join(this.path, name);
      if (!(await exists(path))) continue;
      try {
        await Deno.stat(path);
      } catch {
        await removeIfExists(path);
      }
    }
  }
}

/** One copy of an index: decoded, or why not (`error` undefined and no index: missing). */
async function readIndexFile(
  path: string,
): Promise<{ index?: BlockIndex; error?: BackyError }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return {};
    return { error: new BackyError(`cannot read ${path}: ${errorMessage(e)}`) };
  }
  try {
    return { index: BlockIndex.decode(bytes, path) };
  } catch (e) {
    return { error: e instanceof BackyError ? e : new BackyError(errorMessage(e)) };
  }
}

/**
 * `<id>` when `entry` is a regular `<id>.rev` file. `last.rev` is a link to a real .rev;
 * symlinks never count (2.0 dangling-link bug).
 */
export function revisionIdOf(entry: Deno.DirEntry): string | undefined {
  if (!entry.isFile || !entry.name.endsWith(".rev")) return undefined;
  return entry.name.slice(0, -4) || undefined;
}

/** History order: oldest first, ties by id. */
export function byHistory(
  a: { timestampUs: number; id: string },
  b: { timestampUs: number; id: string },
): number {
  return a.timestampUs - b.timestampUs || (a.id < b.id ? -1 : 1);
}

/** Reads every `<id>.rev` in a directory; unreadable ones are reported, never dropped silently. */
export async function scanRevisions(dir: string): Promise<Scan> {
  const revisions: Revision[] = [];
  const problems: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const id = revisionIdOf(entry);
    if (!id) continue;
    const file = join(dir, entry.name);
    try {
      revisions.push(parseRevision(await Deno.readTextFile(file), file, id));
    } catch (e) {
      problems.push(errorMessage(e));
    }
  }
  revisions.sort(byHistory);
  return { revisions, problems };
}
