/** `backy mount` and `backy umount` (src/mount/, docs/mount.md). */
import { join, resolve } from "node:path";
import { selfCommand } from "../util/self.ts";
import { logger } from "../util/log.ts";
import { announceReady, startInBackground } from "../mount/daemon.ts";
import { runMount, runUmount } from "../mount/mount.ts";
import { print } from "./output.ts";

export interface MountCliOptions {
  daemon?: boolean;
  all?: boolean;
  daemonChild?: boolean;
}

/** Where a background mount logs when no -l is given: the job's (or base dir's) backy.log. */
export function daemonLogfile(dir: string, logfile: string | undefined): string {
  return logfile ?? join(dir, "backy.log");
}

/** `backy [-v] [-l FILE] -b DIR mount [-d] [--all] MOUNTPOINT`. */
export async function mountCommand(
  g: { backupdir: string; logfile?: string; verbose?: boolean },
  mountpoint: string,
  opts: MountCliOptions,
): Promise<void> {
  if (opts.daemon && !opts.daemonChild) {
    const logfile = daemonLogfile(g.backupdir, g.logfile);
    const pid = await startInBackground([
      ...selfCommand(),
      "-b",
      g.backupdir,
      "-l",
      logfile,
      ...(g.verbose ? ["-v"] : []),
      "mount",
      ...(opts.all ? ["--all"] : []),
      "--daemon-child",
      mountpoint,
    ]);
    print(`Mounted ${g.backupdir} on ${resolve(mountpoint)} (pid ${pid}, log ${logfile})`);
    return;
  }
  if (opts.daemonChild) {
    // The terminal may go away; the mount stays until unmounted or SIGTERM.
    Deno.addSignalListener("SIGHUP", () => {});
  }
  await runMount({
    dir: g.backupdir,
    mountpoint,
    all: !!opts.all,
    ready: opts.daemonChild ? () => announceReady() : undefined,
  });
  logger().debug("Mount ended");
}

/** `backy umount [--lazy] MOUNTPOINT`. */
export async function umountCommand(mountpoint: string, lazy: boolean): Promise<void> {
  print(await runUmount(mountpoint, lazy));
}
