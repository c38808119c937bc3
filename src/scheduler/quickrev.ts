/**
 * A fast reader for the few `.rev` fields the scheduler needs (timestamp, tags, completeness,
 * trust), for the plain YAML that backy and backy 2.1 write. The general YAML parser costs
 * ~140 us per file, which is seconds for a status scan of 2,000 jobs' histories.
 *
 * It is deliberately narrow: any line or value outside a small, unambiguous subset of YAML
 * (quotes, anchors, comments after values, odd indentation, numbers where words are
 * expected, ...) returns undefined and the caller uses the full parser, so it never decides
 * differently from `parseRevision`.
 */
import { parseTimestamp, splitChecksum, type Trust } from "../repo/revision.ts";
import { isSafeId } from "../repo/id.ts";

export interface QuickRevision {
  id: string;
  timestampUs: number;
  /** Distinct, sorted (as parseRevision returns them). */
  tags: string[];
  /** Only on complete revisions. */
  duration?: number;
  /** `stats.bytes_written`, 0 when missing (as parseRevision reads it). */
  bytesWritten: number;
  trust: Trust;
  /** The last scrub's time (`verified_at`), if any. */
  verifiedAtUs?: number;
}

/** A plain scalar that every YAML reader takes as the same string (or number) it reads as. */
const SAFE_VALUE = /^[A-Za-z0-9_./+-](?:[A-Za-z0-9_./+: -]*[A-Za-z0-9_./+-])?$/;
/** Words that YAML turns into something else than their text (core and 1.1 schemas). */
const SPECIAL_WORD = /^(?:null|true|false|yes|no|on|off|y|n|~)$/i;
const NUMBER = /^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$|^0[xob]/i;
const TAG_WORD = /^[A-Za-z_][A-Za-z0-9_.:-]*$/;
const KEY_LINE = /^( *)([A-Za-z_][A-Za-z0-9_-]*):(?: +(.*))?$/;
const ITEM_LINE = /^( *)- +(.*)$/;

function safeValue(v: string): boolean {
  return SAFE_VALUE.test(v) && !/^[-?:](?: |$)/.test(v) && !v.includes(": ") &&
    !v.includes(" #") && !v.includes("  ");
}

/** A word that stays exactly this string through a YAML parser (tags, trust, backend). */
function word(v: string, flow: boolean): string | undefined {
  if (!TAG_WORD.test(v) || SPECIAL_WORD.test(v)) return undefined;
  if (v.endsWith(":")) return undefined; // `- a:` is a mapping
  if (flow && v.includes(":")) return undefined; // `a:b` in flow context: leave it to YAML
  return v;
}

function flowList(v: string): string[] | undefined {
  if (!v.startsWith("[") || !v.endsWith("]")) return undefined;
  const inner = v.slice(1, -1).trim();
  if (inner === "") return [];
  const out: string[] = [];
  for (const item of inner.split(",")) {
    const w = word(item.trim(), true);
    if (w === undefined) return undefined;
    out.push(w);
  }
  return out;
}

/** `{bytes_written: 1, duration: 2.5}` with plain scalars only. */
function flowMap(v: string): Map<string, string> | undefined {
  if (!v.startsWith("{") || !v.endsWith("}")) return undefined;
  const inner = v.slice(1, -1).trim();
  const out = new Map<string, string>();
  if (inner === "") return out;
  for (const pair of inner.split(",")) {
    const m = /^([A-Za-z_][A-Za-z0-9_-]*): +(\S+)$/.exec(pair.trim());
    if (!m || out.has(m[1])) return undefined;
    // Numbers, words and null only (a lone `-` would even be a block sequence).
    if (m[2] !== "null" && plainNumber(m[2]) === undefined && word(m[2], true) === undefined) {
      return undefined;
    }
    out.set(m[1], m[2]);
  }
  return out;
}

/** The number YAML reads from a plain scalar, or undefined when that is not certain. */
function plainNumber(v: string): number | undefined {
  if (!/^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/.test(v)) return undefined;
  if (/^[-+]?0\d/.test(v)) return undefined; // leading zeros: schema-dependent
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

interface StatsFields {
  duration?: string;
  bytesWritten?: string;
}

/**
 * Reads `text` of `<id>.rev`; undefined means "not sure, use the full parser" (including
 * every file the full parser would reject).
 */
export function quickRevision(whole: string, id: string): QuickRevision | undefined {
  // A damaged file (checksum mismatch) is the full parser's to reject and report.
  const { body: text, verdict } = splitChecksum(whole);
  if (verdict === "bad") return undefined;
  const top = new Map<string, string>(); // key -> inline value ("" when a block may follow)
  const tagItems: string[] = [];
  const stats: StatsFields = {};
  let current = ""; // the top-level key whose block we are in
  let opens = false; // the previous line was a key without a value: a deeper block may follow
  let itemIndent = -1; // indent of the items of the `tags:` block
  // Nested mappings below the current top-level key: indent and the keys seen at it.
  let levels: { indent: number; keys: Set<string> }[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    if (line.includes("\t")) return undefined;
    const key = KEY_LINE.exec(line);
    if (key && key[1] === "") {
      const [, , name, value = ""] = key;
      if (top.has(name)) return undefined; // duplicate keys are a YAML error
      const v = value.trim();
      if (v !== "" && !safeValue(v) && flowList(v) === undefined && flowMap(v) === undefined) {
        return undefined;
      }
      top.set(name, v);
      current = name;
      opens = v === "";
      itemIndent = -1;
      levels = [];
      continue;
    }
    if (current === "" || top.get(current) !== "") return undefined;
    if (current === "tags") {
      // Only block sequence items, all at one indent (0 is YAML's compact form).
      const item = ITEM_LINE.exec(line);
      if (!item) return undefined;
      if (itemIndent < 0) itemIndent = item[1].length;
      if (item[1].length !== itemIndent) return undefined;
      const w = word(item[2].trim(), false);
      if (w === undefined) return undefined;
      tagItems.push(w);
      continue;
    }
    if (!key) return undefined; // sequences, continuation lines, anything else
    const indent = key[1].length;
    const last = levels.at(-1);
    if (!last || indent > last.indent) {
      if (!opens) return undefined;
      levels.push({ indent, keys: new Set() });
    } else {
      while (levels.length && levels.at(-1)!.indent > indent) levels.pop();
      if (levels.at(-1)?.indent !== indent) return undefined;
    }
    const [, , name, value = ""] = key;
    const level = levels.at(-1)!;
    if (level.keys.has(name)) return undefined;
    level.keys.add(name);
    const v = value.trim();
    if (v !== "" && !safeValue(v)) return undefined;
    opens = v === "";
    if (current === "stats" && levels.length === 1) {
      if (name === "duration") stats.duration = v;
      else if (name === "bytes_written") stats.bytesWritten = v;
    }
  }

  const uuid = top.get("uuid");
  if (uuid !== undefined && (uuid !== id || NUMBER.test(uuid) || SPECIAL_WORD.test(uuid))) {
    return undefined;
  }
  if (!isSafeId(id)) return undefined;

  const ts = top.get("timestamp");
  if (ts === undefined || NUMBER.test(ts)) return undefined;
  let timestampUs: number;
  try {
    timestampUs = parseTimestamp(ts);
  } catch {
    return undefined;
  }

  let tags: string[];
  const tagValue = top.get("tags");
  if (tagValue === undefined) tags = [];
  else if (tagValue === "") tags = tagItems;
  else {
    const list = flowList(tagValue);
    if (list === undefined) return undefined;
    tags = list;
  }

  const statsValue = top.get("stats");
  if (statsValue !== undefined && statsValue !== "") {
    const m = flowMap(statsValue);
    if (m === undefined) return undefined;
    stats.duration = m.get("duration");
    stats.bytesWritten = m.get("bytes_written");
  }
  let bytesWritten = 0;
  if (stats.bytesWritten !== undefined && stats.bytesWritten !== "null") {
    const n = plainNumber(stats.bytesWritten);
    if (n === undefined) return undefined;
    bytesWritten = n;
  }
  let duration: number | undefined;
  // `duration:` with nothing after it may be a nested mapping: the full parser decides.
  if (stats.duration === "") return undefined;
  if (stats.duration !== undefined && stats.duration !== "null") {
    duration = plainNumber(stats.duration);
    if (duration === undefined) return undefined;
  }

  const backend = top.get("backend") ?? top.get("backend_type");
  if (backend !== undefined && !["cow", "chunked", "cowfile"].includes(backend)) return undefined;
  const trust = top.get("trust") ?? "trusted";
  if (trust !== "trusted" && trust !== "distrusted" && trust !== "verified") return undefined;

  let verifiedAtUs: number | undefined;
  const verified = top.get("verified_at");
  if (verified !== undefined) {
    if (verified === "" || NUMBER.test(verified) || SPECIAL_WORD.test(verified)) return undefined;
    try {
      verifiedAtUs = parseTimestamp(verified);
    } catch {
      return undefined;
    }
  }

  const rev: QuickRevision = {
    id,
    timestampUs,
    tags: [...new Set(tags)].sort(),
    bytesWritten,
    trust,
  };
  if (duration !== undefined) rev.duration = duration;
  if (verifiedAtUs !== undefined) rev.verifiedAtUs = verifiedAtUs;
  return rev;
}
