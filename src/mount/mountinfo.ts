/**
 * Which backy mounts exist, from /proc/self/mountinfo (the kernel's own list, so a killed
 * mount process leaves nothing stale behind but the mount itself, which `backy umount`
 * removes). A job mount has type `fuse.backy` and the job directory as its source; a base
 * directory mount has type `fuse.backy-base` and the base directory as its source.
 */
import { basename, dirname, join } from "node:path";
import { readProcFile } from "../util/native/procfile.ts";

/** Filesystem subtypes (the type is `fuse.` + subtype). */
export const JOB_SUBTYPE = "backy";
export const BASE_SUBTYPE = "backy-base";

/** One line of mountinfo, the fields we use. */
export interface MountEntry {
  /** The device, `MAJOR:MINOR` (its /sys/class/bdi entry for FUSE). */
  dev: string;
  mountpoint: string;
  fstype: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal (`\040`). */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses mountinfo text (pure). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const sep = fields.indexOf("-", 6);
    if (fields.length < 10 || sep < 0 || sep + 2 >= fields.length) continue;
    out.push({
      dev: fields[2],
      mountpoint: unescape(fields[4]),
      fstype: fields[sep + 1],
      source: unescape(fields[sep + 2]),
    });
  }
  return out;
}

/** Whether an entry is a backy mount. */
export function isBackyMount(e: MountEntry): boolean {
  return e.fstype === `fuse.${JOB_SUBTYPE}` || e.fstype === `fuse.${BASE_SUBTYPE}`;
}

/**
 * Where revision `id` of the job at `jobPath` appears in the mounts listed (pure): in a
 * mount of the job itself, or in its folder of a mount of the base directory above it.
 */
export function pathsInMounts(entries: MountEntry[], jobPath: string, id: string): string[] {
  const out: string[] = [];
  for (const e of entries) {
    if (e.fstype === `fuse.${JOB_SUBTYPE}` && e.source === jobPath) {
      out.push(join(e.mountpoint, id));
    } else if (e.fstype === `fuse.${BASE_SUBTYPE}` && e.source === dirname(jobPath)) {
      out.push(join(e.mountpoint, basename(jobPath), id));
    }
  }
  return out;
}

/** The mounts of this process's namespace. */
export function readMountinfo(): MountEntry[] {
  return parseMountinfo(readProcFile("/proc/self/mountinfo"));
}

/**
 * The path of a revision's image in a live mount, if one is active: a mount whose process
 * was killed ("not connected") is skipped.
 */
export async function mountedImage(jobPath: string, id: string): Promise<string | undefined> {
  for (const path of pathsInMounts(readMountinfo(), jobPath, id)) {
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch {
      // dead mount, or the revision is not served there
    }
  }
  return undefined;
}
