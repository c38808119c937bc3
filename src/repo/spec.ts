/**
 * Revision specs (design D6, spec 1.3), pure. Resolution order, first match wins:
 * number (0 = newest, counted over the history `status` shows), exact ID,
 * `last`/`latest` (newest complete revision), tag (newest complete revision carrying it),
 * unique ID prefix (ambiguous = error naming the candidates).
 */
import { BackyError } from "../util/errors.ts";
import { isComplete, type Revision } from "./revision.ts";

export class SpecNotFound extends BackyError {}

/** `history` must be sorted oldest first. */
export function resolveSpec(history: Revision[], spec: string, jobDir: string): Revision {
  const notFound = () => new SpecNotFound(`Cannot find revision in ${jobDir}: '${spec}'`);
  if (spec === "" || history.length === 0) throw notFound();
  if (/^[+-]?\d+$/.test(spec)) {
    const n = Number(spec);
    if (n < 0) throw notFound();
    if (n < history.length) return history[history.length - 1 - n];
  }
  const exact = history.find((r) => r.id === spec);
  if (exact) return exact;
  const complete = history.filter(isComplete);
  if (spec === "last" || spec === "latest") {
    const newest = complete.at(-1);
    if (!newest) throw notFound();
    return newest;
  }
  const tagged = complete.filter((r) => r.tags.includes(spec));
  if (tagged.length) return tagged[tagged.length - 1];
  const prefixed = history.filter((r) => r.id.startsWith(spec));
  if (prefixed.length === 1) return prefixed[0];
  if (prefixed.length > 1) {
    throw new BackyError(
      `Ambiguous revision '${spec}' in ${jobDir}: matches ${prefixed.map((r) => r.id).join(", ")}`,
    );
  }
  throw notFound();
}
