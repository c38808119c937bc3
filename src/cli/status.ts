/** `backy status`: the revision table of spec 1.5, or (`--json`) every revision's state. */
import { formatBytes, formatDateTime, formatDuration } from "../util/format.ts";
import { renderTable } from "../util/table.ts";
import { isComplete, type Revision, revisionDate } from "../repo/revision.ts";

export function statusTable(revisions: Revision[]): string {
  const rows = revisions.map((r) => [
    formatDateTime(revisionDate(r)),
    r.id,
    formatBytes(r.stats.bytes_written ?? 0),
    formatDuration(r.stats.duration),
    r.tags.join(","),
  ]);
  const total = revisions.reduce((sum, r) => sum + (r.stats.bytes_written ?? 0), 0);
  const table = renderTable([
    { header: "Date (UTC)" },
    { header: "ID" },
    { header: "Size", align: "right" },
    { header: "Durat", align: "right" },
    { header: "Tags" },
  ], rows);
  return `${table}\n${revisions.length} revisions containing ${
    formatBytes(total)
  } data (estimated)\n`;
}

/**
 * `status --json`: revisions oldest first with an explicit `state` (complete or incomplete),
 * trust, verification time (when a scrub recorded one) and the failure reason if any.
 */
export function statusJson(revisions: Revision[]): string {
  return JSON.stringify(
    revisions.map((r) => ({
      id: r.id,
      timestamp: new Date(r.timestampUs / 1000).toISOString(),
      state: isComplete(r) ? "complete" : "incomplete",
      tags: r.tags,
      trust: r.trust,
      verified_at: r.verifiedAtUs === undefined
        ? null
        : new Date(r.verifiedAtUs / 1000).toISOString(),
      damage: r.damage ?? [],
      duration: r.stats.duration ?? null,
      bytes_written: r.stats.bytes_written ?? 0,
      parent: r.parent,
      backend: r.backend,
      error: r.error ?? null,
    })),
    null,
    2,
  );
}
