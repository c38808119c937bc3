/**
 * A base directory as a mount sees it: one folder per job directory directly under it
 * (a directory with a `config`), re-read at most once a second; each job is opened (and
 * its read lock taken) when first seen and kept until the mount ends.
 */
import { join } from "node:path";
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { JobDir } from "../repo/jobdir.ts";
import { JobView, LISTING_TTL_MS } from "./jobview.ts";
import { usableName } from "./names.ts";

export class BaseView {
  #jobs = new Map<string, JobView>();
  #refused = new Set<string>();
  #scanned = 0;
  #scanning: Promise<void> | undefined;

  constructor(readonly dir: string, private log: Logger) {}

  /** The job folders by name, at most LISTING_TTL_MS old. */
  async jobs(): Promise<Map<string, JobView>> {
    if (Date.now() - this.#scanned >= LISTING_TTL_MS) {
      this.#scanning ??= this.#rescan().finally(() => this.#scanning = undefined);
      await this.#scanning;
    }
    return this.#jobs;
  }

  async #rescan(): Promise<void> {
    const seen = new Set<string>();
    for await (const e of Deno.readDir(this.dir)) {
      if (!e.isDirectory || !usableName(e.name) || e.name.startsWith(".")) continue;
      const path = join(this.dir, e.name);
      const isJob = await Deno.stat(JobDir.configPath(path)).then((s) => s.isFile, () => false);
      if (!isJob) continue;
      seen.add(e.name);
      if (this.#jobs.has(e.name) || this.#refused.has(e.name)) continue;
      try {
        const job = await JobDir.open(path);
        this.#jobs.set(e.name, new JobView(job, await job.lockRead(), this.log));
      } catch (err) {
        this.#refused.add(e.name);
        this.log.warning("Not serving a job directory", { job: path, error: errorMessage(err) });
      }
    }
    for (const [name, view] of this.#jobs) {
      if (seen.has(name)) continue;
      view.close();
      this.#jobs.delete(name);
    }
    this.#scanned = Date.now();
  }

  /** Releases every job's read lock. */
  close(): void {
    for (const view of this.#jobs.values()) view.close();
    this.#jobs.clear();
  }
}
