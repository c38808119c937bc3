/**
 * What a job's folder in a mount shows (pure): one image file per complete revision, named
 * by its ID; `last` (the newest complete revision) and one name per tag (the newest
 * complete revision carrying it), both as symbolic links to the ID, so `ls -l` says which
 * revision they are. This is what `backy find -r last|TAG` resolves to (repo/spec.ts).
 */
import { isComplete, type Revision } from "../repo/revision.ts";

/** A name in a job's folder. */
export type JobEntry =
  | { kind: "image"; rev: Revision }
  | { kind: "link"; rev: Revision; target: string };

/** Longest file name the kernel passes (NAME_MAX), in UTF-8 bytes. */
const NAME_MAX = 255;

/** Whether `name` can be a file name of its own (tags may contain `/`). */
export function usableName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") &&
    !name.includes("\0") && new TextEncoder().encode(name).length <= NAME_MAX;
}

/**
 * The names of a job's folder, in the order `ls -U` shows them: revisions oldest first,
 * then `last`, then tags by name. `served(rev)` says whether a revision can be served (it
 * has an index); history is oldest first. IDs win over `last`, `last` wins over a tag of
 * that name; unusable names are left out, and so are `last` and tags whose revision is not
 * served (rather than an older revision under that name).
 */
export function jobEntries(
  history: Revision[],
  served: (rev: Revision) => boolean,
): Map<string, JobEntry> {
  const out = new Map<string, JobEntry>();
  const complete = history.filter(isComplete);
  for (const rev of complete) {
    if (served(rev) && usableName(rev.id)) out.set(rev.id, { kind: "image", rev });
  }
  const link = (name: string, rev: Revision) => {
    if (usableName(name) && !out.has(name) && out.has(rev.id)) {
      out.set(name, { kind: "link", rev, target: rev.id });
    }
  };
  const newest = complete.at(-1);
  if (newest) link("last", newest);
  const newestByTag = new Map<string, Revision>();
  for (const rev of complete) for (const tag of rev.tags) newestByTag.set(tag, rev);
  for (const tag of [...newestByTag.keys()].sort()) link(tag, newestByTag.get(tag)!);
  return out;
}
