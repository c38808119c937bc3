/**
 * Whether a directory or file may be trusted with backups, the way ssh judges its own files
 * (StrictModes, design D18): it must belong to us or to root and must not be writable by
 * anyone else, or another local user could make root back up (or overwrite) what they like.
 * Readable by others is allowed (older versions created such files) but warned about.
 */
import { BackyError } from "./errors.ts";

/** A refusal (BackyError) for an untrustworthy owner or mode, else a warning or undefined. */
export function judgeOwnership(
  what: string,
  path: string,
  info: { uid: number | null; mode: number | null; isDirectory: boolean },
  me = Deno.uid(),
): string | undefined {
  const mode = (info.mode ?? 0) & 0o7777;
  const octal = mode.toString(8).padStart(4, "0");
  if (info.uid !== null && me !== null && info.uid !== me && info.uid !== 0) {
    throw new BackyError(
      `${what} ${path} belongs to uid ${info.uid}, not to you (uid ${me}) or root; ` +
        "refusing to trust it",
    );
  }
  // A sticky directory (like /tmp) still lets others add files, so it is no exception here.
  if (mode & 0o022) {
    throw new BackyError(
      `${what} ${path} is writable by other users (mode ${octal}); refusing to trust it ` +
        `(chmod go-w ${path})`,
    );
  }
  if (mode & 0o004) {
    return `${what} ${path} is readable by other users (mode ${octal}); ` +
      `chmod ${info.isDirectory ? "700" : "600"} ${path} keeps its data private`;
  }
  return undefined;
}
