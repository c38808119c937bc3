/**
 * Source section rules (spec 2.2, 3.2, 3.3, 3.5), shared by the scheduler config's
 * `jobs.<name>.source` and the job directory's `config` file.
 */
import { parseDuration } from "./duration.ts";
import { type Entry, listOf, type Located, quote, YamlChecker } from "./yaml_check.ts";

/** The source mapping as written (keys and values untouched), e.g. for the job `config` file. */
export type SourceMapping = Record<string, unknown> & { type: string };

export interface FileSourceSettings {
  type: "file";
  filename: string;
}

export interface CephRbdSourceSettings {
  type: "ceph-rbd";
  pool: string;
  image: string;
  fullAlways: boolean;
}

export interface FlyingCircusSourceSettings {
  type: "flyingcircus";
  pool: string;
  image: string;
  fullAlways: boolean;
  vm: string;
  consulAclToken: string | null;
  consulUrl: string;
  /** Seconds to wait for the VM host's snapshot before falling back to a plain one. */
  snapshotTimeout: number;
}

/** Typed settings with defaults applied. */
export type SourceSettings =
  | FileSourceSettings
  | CephRbdSourceSettings
  | FlyingCircusSourceSettings;

export interface ValidSource {
  mapping: SourceMapping;
  settings: SourceSettings;
}

export const SOURCE_TYPES = ["file", "ceph-rbd", "flyingcircus"] as const;
export const DEFAULT_CONSUL_URL = "http://127.0.0.1:8500";
export const DEFAULT_SNAPSHOT_TIMEOUT = 90;

const KEYS: Record<(typeof SOURCE_TYPES)[number], readonly string[]> = {
  "file": ["type", "filename"],
  "ceph-rbd": ["type", "pool", "image", "full-always"],
  // flyingcircus extends ceph-rbd (spec 3.5), so full-always applies to it as well.
  "flyingcircus": [
    "type",
    "pool",
    "image",
    "vm",
    "full-always",
    "consul_acl_token",
    "consul_url",
    "snapshot_timeout",
  ],
};

/** Validate a source node of a parsed YAML document (`at.line` = line of the `source:` key). */
export function checkSource(check: YamlChecker, at: Located): ValidSource {
  const entries = check.entries(at);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const type = check.string(check.require(byName, "type", at));
  if (!(SOURCE_TYPES as readonly string[]).includes(type)) {
    check.fail(
      byName.get("type")!,
      `unknown source type ${quote(type)} (expected ${listOf(SOURCE_TYPES)})`,
    );
  }
  const sourceType = type as (typeof SOURCE_TYPES)[number];
  const allowed = KEYS[sourceType];
  for (const entry of entries) {
    if (!allowed.includes(entry.name)) {
      check.fail(entry, `unknown key for source type ${type} (expected ${listOf(allowed)})`);
    }
  }
  const req = (name: string) => check.require(byName, name, at);
  const opt = (name: string): Entry | undefined => byName.get(name);

  let settings: SourceSettings;
  if (sourceType === "file") {
    const filename = check.string(req("filename"), { nonEmpty: true });
    if (filename.includes("\0")) check.fail(req("filename"), "must not contain NUL characters");
    settings = { type: "file", filename };
  } else {
    const pool = cephName(check, req("pool"));
    const image = cephName(check, req("image"));
    const fullAlwaysEntry = opt("full-always");
    const fullAlways = fullAlwaysEntry ? check.boolean(fullAlwaysEntry) : false;
    if (sourceType === "ceph-rbd") {
      settings = { type: "ceph-rbd", pool, image, fullAlways };
    } else {
      const vm = check.string(req("vm"), { nonEmpty: true });
      const tokenEntry = opt("consul_acl_token");
      let consulAclToken: string | null = null;
      if (tokenEntry && check.scalar(tokenEntry) !== null) {
        consulAclToken = check.string(tokenEntry);
      }
      const urlEntry = opt("consul_url");
      const consulUrl = urlEntry ? httpUrl(check, urlEntry) : DEFAULT_CONSUL_URL;
      const timeoutEntry = opt("snapshot_timeout");
      const snapshotTimeout = timeoutEntry
        ? duration(check, timeoutEntry)
        : DEFAULT_SNAPSHOT_TIMEOUT;
      settings = {
        type: "flyingcircus",
        pool,
        image,
        fullAlways,
        vm,
        consulAclToken,
        consulUrl,
        snapshotTimeout,
      };
    }
  }

  // Every accepted value is a scalar, so the mapping is rebuilt key by key in written order.
  const mapping: Record<string, unknown> = {};
  for (const entry of entries) mapping[entry.name] = check.scalar(entry);
  return { mapping: mapping as SourceMapping, settings };
}

/**
 * Validate a source given as a plain value (e.g. read from a job `config` file). Without
 * source positions every error is blamed on `where.line`; `where.path` prefixes key names.
 */
export function validateSource(
  source: unknown,
  where: { file: string; line?: number; path?: string },
): ValidSource {
  const { root, check } = YamlChecker.forValue(source, where.file, where.line);
  return checkSource(check, { node: root, path: where.path ?? "source", line: where.line });
}

/** Interval syntax of spec 4.2, also accepted as a plain number of seconds. */
export function duration(check: YamlChecker, at: Located): number {
  const value = check.scalar(at);
  if (typeof value !== "string" && typeof value !== "number") {
    check.fail(at, `expected a duration such as 90s or 1d, got ${check.describe(at)}`);
  }
  const seconds = parseDuration(value);
  if (seconds === undefined) {
    check.fail(
      at,
      `invalid duration ${
        quote(String(value))
      } (expected a positive integer with optional unit w, d, h, m or s)`,
    );
  }
  return seconds;
}

/**
 * Pool and image names end up in `rbd` arguments as `POOL/IMAGE@SNAP`: a `/` or `@` would be
 * misparsed and a leading `-` read as an option.
 */
function cephName(check: YamlChecker, at: Located): string {
  const name = check.string(at, { nonEmpty: true });
  if (name.startsWith("-")) check.fail(at, `invalid name ${quote(name)} (must not start with "-")`);
  if (/[/@\s\p{Cc}]/u.test(name)) {
    check.fail(
      at,
      `invalid name ${quote(name)} (must not contain "/", "@", whitespace or control characters)`,
    );
  }
  return name;
}

function httpUrl(check: YamlChecker, at: Located): string {
  const text = check.string(at);
  let ok = false;
  try {
    const url = new URL(text);
    ok = url.protocol === "http:" || url.protocol === "https:";
  } catch {
    ok = false;
  }
  if (!ok) check.fail(at, `expected an http or https URL, got ${quote(text)}`);
  return text;
}
