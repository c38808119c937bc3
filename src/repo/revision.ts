/**
 * Revision metadata `<id>.rev` (spec 2.3): YAML with uuid, timestamp (backup start, UTC),
 * parent, stats (bytes_written; duration only once complete), tags; plus backend, trust and
 * the last verification. This version starts the file with `checksum: sha256:<hex>` over
 * everything after that line, so a flipped bit or a truncated file makes the revision
 * unusable (reported, never acted on) instead of, say, incomplete; files without it (backy 2.x
 * and 3.0) load as before.
 */
import { createHash } from "node:crypto";
import YAML from "yaml";
import { BackyError, errorMessage } from "../util/errors.ts";
import { isSafeId } from "./id.ts";

export type Backend = "cow" | "chunked" | "s3";
export type Trust = "trusted" | "distrusted" | "verified";

export interface Stats {
  bytes_written: number;
  duration?: number;
  [key: string]: unknown;
}

export interface Revision {
  id: string;
  /** Microseconds since the Unix epoch: .rev files carry microseconds. */
  timestampUs: number;
  parent: string | null;
  stats: Stats;
  tags: string[];
  backend: Backend;
  trust: Trust;
  /** Why the revision failed, when it did (kept as evidence until the next backup). */
  error?: string;
  /** When a scrub (`backy verify`) last read all of it, in microseconds; undefined: never. */
  verifiedAtUs?: number;
  /** What a scrub found damaged (a few lines, naming blocks and files). */
  damage?: string[];
  /** Its file carried a valid checksum (written by this version), not a 2.x file. */
  checksummed?: boolean;
  /**
   * Written by backy 3 (its `.rev` names a `backend`): it has an index, so a missing index
   * is damage, not the mark of a 2.x revision whose blocks cannot be checked.
   */
  indexed?: boolean;
  /** Unknown keys from other versions, written back unchanged. */
  extra: Record<string, unknown>;
}

export function isComplete(rev: Revision): boolean {
  return typeof rev.stats.duration === "number";
}

/** Refuses revisions whose backup never finished, with a message saying what to do. */
export function assertComplete(rev: Revision): void {
  if (isComplete(rev)) return;
  throw new BackyError(
    `revision ${rev.id} is incomplete (its backup did not finish${
      rev.error ? `: ${rev.error}` : ""
    }); choose a complete one (see 'backy status')`,
  );
}

/** The newest complete, trusted revision (whatever its backend). */
export function newestGood(revisions: Revision[]): Revision | undefined {
  return revisions.filter((r) => isComplete(r) && r.trust !== "distrusted").at(-1);
}

export function revisionDate(rev: Revision): Date {
  return new Date(Math.floor(rev.timestampUs / 1000));
}

const TS_RE =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/;

/** Parses YAML timestamps as written by 2.1 (`2015-09-01 07:06:47.123456+00:00`); naive = UTC. */
export function parseTimestamp(value: unknown): number {
  if (typeof value === "number" && Number.isFinite(value)) {
    return Math.round(value * 1e6); // very old format: float Unix epoch
  }
  if (value instanceof Date) return value.getTime() * 1000;
  if (typeof value !== "string") throw new Error("timestamp missing or not a timestamp");
  const m = TS_RE.exec(value.trim());
  if (!m) throw new Error(`invalid timestamp '${value}'`);
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  let ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s);
  if (Number.isNaN(ms)) throw new Error(`invalid timestamp '${value}'`);
  if (tz && tz !== "Z") {
    const sign = tz[0] === "-" ? -1 : 1;
    const digits = tz.slice(1).replace(":", "");
    const off = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4) || "0");
    ms -= sign * off * 60_000;
  }
  const us = frac ? Math.floor(Number(frac.padEnd(6, "0").slice(0, 6))) : 0;
  return ms * 1000 + us;
}

export function formatRevTimestamp(us: number): string {
  const ms = Math.floor(us / 1000);
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const micro = us - Math.floor(us / 1e6) * 1e6;
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}.${p(micro, 6)}+00:00`;
}

const KNOWN = new Set([
  "uuid",
  "timestamp",
  "parent",
  "stats",
  "tags",
  "backend",
  "backend_type",
  "trust",
  "error",
  "verified_at",
  "damage",
  "checksum",
]);

const CHECKSUM_PREFIX = "checksum: sha256:";
const CHECKSUM_LINE = /^checksum: sha256:([0-9a-f]{64})\n/;

/**
 * Whether the text starts like a checksum line, allowing for two damaged bytes: a flip in
 * the key must not turn a file of this version into one that looks like 2.x.
 */
function claimsChecksum(text: string): boolean {
  let differ = 0;
  for (let i = 0; i < CHECKSUM_PREFIX.length; i++) {
    if (text[i] !== CHECKSUM_PREFIX[i]) differ++;
  }
  return differ <= 2;
}

function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/**
 * Splits a `.rev` text into what the checksum covers and the checksum's verdict: `none` for
 * files without one (2.x), `bad` when it does not match or a `checksum:` key sits elsewhere.
 */
export function splitChecksum(text: string): { body: string; verdict: "ok" | "bad" | "none" } {
  const m = CHECKSUM_LINE.exec(text);
  if (!m) {
    return {
      body: text,
      verdict: claimsChecksum(text) || /^checksum:/m.test(text) ? "bad" : "none",
    };
  }
  const body = text.slice(m[0].length);
  return { body, verdict: sha256Hex(body) === m[1] && !/^checksum:/m.test(body) ? "ok" : "bad" };
}

/** Parses `.rev` text; throws BackyError naming the file on anything malformed. */
export function parseRevision(text: string, file: string, fallbackId: string): Revision {
  const { body, verdict } = splitChecksum(text);
  if (verdict === "bad") {
    throw new BackyError(
      `corrupt revision file ${file}: checksum mismatch (damaged, or edited by hand: use ` +
        "'backy tags' to change tags)",
    );
  }
  let data: unknown;
  try {
    data = YAML.parse(body);
  } catch (e) {
    throw new BackyError(`corrupt revision file ${file}: ${errorMessage(e).split("\n")[0]}`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new BackyError(`corrupt revision file ${file}: not a YAML mapping`);
  }
  const d = data as Record<string, unknown>;
  const fail = (what: string) => new BackyError(`corrupt revision file ${file}: ${what}`);
  const id = d.uuid === undefined ? fallbackId : String(d.uuid);
  if (!isSafeId(id)) throw fail(`invalid uuid '${id}'`);
  if (id !== fallbackId) throw fail(`uuid '${id}' does not match the file name`);
  let timestampUs: number;
  try {
    timestampUs = parseTimestamp(d.timestamp);
  } catch (e) {
    throw fail(errorMessage(e));
  }
  const parent = d.parent === undefined || d.parent === null || d.parent === ""
    ? null
    : String(d.parent);
  const rawStats = d.stats ?? {};
  if (typeof rawStats !== "object" || Array.isArray(rawStats)) throw fail("stats is not a mapping");
  const stats = { ...(rawStats as Record<string, unknown>) } as Stats;
  stats.bytes_written = Number(stats.bytes_written ?? 0);
  if (!Number.isFinite(stats.bytes_written)) throw fail("stats.bytes_written is not a number");
  if (stats.duration !== undefined && stats.duration !== null) {
    if (typeof stats.duration !== "number") throw fail("stats.duration is not a number");
  } else delete stats.duration;
  const rawTags = d.tags ?? [];
  if (!Array.isArray(rawTags)) throw fail("tags is not a list");
  const tags = [...new Set(rawTags.map(String))].sort();
  const backendRaw = d.backend ?? d.backend_type ?? "cow";
  const backend: Backend = backendRaw === "chunked" || backendRaw === "s3" ? backendRaw : "cow";
  if (!["cow", "chunked", "cowfile", "s3"].includes(backendRaw as string)) {
    throw fail(`unknown backend '${backendRaw}'`);
  }
  const trustRaw = d.trust ?? "trusted";
  if (trustRaw !== "trusted" && trustRaw !== "distrusted" && trustRaw !== "verified") {
    throw fail(`unknown trust '${trustRaw}'`);
  }
  let verifiedAtUs: number | undefined;
  if (d.verified_at !== undefined && d.verified_at !== null) {
    try {
      verifiedAtUs = parseTimestamp(d.verified_at);
    } catch (e) {
      throw fail(`verified_at: ${errorMessage(e)}`);
    }
  }
  if (d.damage !== undefined && !Array.isArray(d.damage)) throw fail("damage is not a list");
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(d)) if (!KNOWN.has(k)) extra[k] = v;
  const rev: Revision = {
    id,
    timestampUs,
    parent,
    stats,
    tags,
    backend,
    trust: trustRaw,
    error: d.error === undefined ? undefined : String(d.error),
    extra,
  };
  if (verifiedAtUs !== undefined) rev.verifiedAtUs = verifiedAtUs;
  if (Array.isArray(d.damage)) rev.damage = d.damage.map(String);
  if (verdict === "ok") rev.checksummed = true;
  if (d.backend !== undefined) rev.indexed = true;
  return rev;
}

export function serializeRevision(rev: Revision): string {
  const out: Record<string, unknown> = {
    ...rev.extra,
    backend: rev.backend,
    parent: rev.parent,
    stats: rev.stats,
    tags: [...rev.tags].sort(),
    timestamp: formatRevTimestamp(rev.timestampUs),
    trust: rev.trust,
    uuid: rev.id,
  };
  if (rev.error !== undefined) out.error = rev.error;
  if (rev.verifiedAtUs !== undefined) out.verified_at = formatRevTimestamp(rev.verifiedAtUs);
  if (rev.damage?.length) out.damage = rev.damage;
  const body = YAML.stringify(out, { sortMapEntries: true });
  return `checksum: sha256:${sha256Hex(body)}\n${body}`;
}
