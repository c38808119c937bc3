/** `backy status`: the revision table of spec 1.5. */
import { formatBytes, formatDateTime, formatDuration } from "../util/format.ts";
import { renderTable } from "../util/table.ts";
import { type Revision, revisionDate } from "../repo/revision.ts";

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
