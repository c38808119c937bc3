/**
 * The scheduler config file (spec 4.1): `global`, `schedules`, `jobs`, parsed into a typed
 * result. Every problem is one ConfigError `file:line: key.path: problem`.
 */
import { parseSize } from "./duration.ts";
import { dirname, isAbsolute, join, normalize, resolve } from "node:path";
import { ConfigError, errorMessage } from "../util/errors.ts";
import { checkSource, duration, type SourceMapping } from "./source_config.ts";
import { parseAddress } from "./address.ts";
import { S3_KEYS, type S3Settings, validateS3 } from "./s3_config.ts";
import {
  type Entry,
  listOf,
  type Located,
  parseYaml,
  quote,
  type YamlChecker,
} from "./yaml_check.ts";

export {
  checkSource,
  type SourceMapping,
  type SourceSettings,
  validateSource,
  type ValidSource,
} from "./source_config.ts";

export interface ScheduleTag {
  /** Seconds. */
  interval: number;
  keep: number;
}

/** Tag name -> interval and keep. */
export type ScheduleDef = Record<string, ScheduleTag>;

export interface JobConfig {
  name: string;
  schedule: string;
  scheduleDef: ScheduleDef;
  backend?: "cow" | "chunked" | "s3";
  /** backend s3: global `s3` with this job's name; copied into the job's `config`. */
  s3?: S3Settings;
  /** How backups of this job verify (design D16): `changed` (default) or `full`. */
  verify?: "changed" | "full";
  /** The source mapping as written; the daemon copies it into the job's `config` file. */
  source: SourceMapping;
}

export interface SchedulerConfig {
  file: string;
  baseDir: string;
  workerLimit: number;
  statusFile: string;
  /** Seconds. */
  statusInterval: number;
  telnetAddrs: string[];
  telnetPort: number;
  /** `backup-completed-callback`: run as `PROGRAM JOB` after each successful scheduled backup. */
  completedCallback?: string;
  /** `backup-failed-callback`: run as `PROGRAM JOB` after each failed scheduled run. */
  failedCallback?: string;
  /** Seconds a callback may run before it is killed. */
  callbackTimeout: number;
  /** Seconds a backup (or expire) child may run before the scheduler kills it. */
  backupTimeout: number;
  /** `check` is CRITICAL for a job whose last this many scheduled runs failed. */
  criticalFailures: number;
  /** Scrub: every stored block re-read at least once per this many seconds; 0 = off. */
  verifyEvery: number;
  /** Scrub: at most this many bytes read per job per day (undefined: what coverage needs). */
  verifyBudget?: number;
  /** Group (name or number) that may read the status file and the scheduler's log (0640). */
  monitoringGroup?: string;
  /** The HTTP endpoint; undefined = off. */
  http?: HttpConfig;
  /** `s3`: the bucket shared by this host's s3 jobs (and other hosts'). */
  s3?: S3Settings;
  schedules: Record<string, ScheduleDef>;
  jobs: Record<string, JobConfig>;
}

/** The scheduler's HTTP endpoint (off unless `http-port` is set). */
export interface HttpConfig {
  addrs: string[];
  port: number;
  /** Client name -> bearer token. Empty: no authentication (loopback only). */
  tokens: Record<string, string>;
  /** PEM files; both or neither. */
  tlsCert?: string;
  tlsKey?: string;
}

export const DEFAULT_BASE_DIR = "/srv/backy";
export const DEFAULT_WORKER_LIMIT = 1;
export const DEFAULT_STATUS_INTERVAL = 30;
export const DEFAULT_TELNET_ADDRS: readonly string[] = ["::1", "127.0.0.1"];
export const DEFAULT_TELNET_PORT = 6023;
export const DEFAULT_HTTP_ADDRS: readonly string[] = ["::1", "127.0.0.1"];
export const DEFAULT_CALLBACK_TIMEOUT = 60;
/** A day: a backup running longer than a day-long interval is stuck, not slow. */
export const DEFAULT_BACKUP_TIMEOUT = 86400;
/** Scrub period (design D16): every stored block read again at least once a month. */
export const DEFAULT_VERIFY_EVERY = 30 * 86400;
export const DEFAULT_CRITICAL_FAILURES = 3;
/** Bearer tokens shorter than this are refused: they could be guessed. */
export const MIN_TOKEN_LENGTH = 16;

const TOP_KEYS = ["global", "schedules", "jobs"];
const GLOBAL_KEYS = [
  "base-dir",
  "worker-limit",
  "status-file",
  "status-interval",
  "telnet-addrs",
  "telnet-port",
  "backup-completed-callback",
  "backup-failed-callback",
  "callback-timeout",
  "backup-timeout",
  "critical-failures",
  "verify-every",
  "verify-budget",
  "monitoring-group",
  "http-addrs",
  "http-port",
  "http-tokens",
  "http-tls-cert",
  "http-tls-key",
  "s3",
];
const TAG_KEYS = ["interval", "keep"];
const JOB_KEYS = ["schedule", "backend", "verify", "source"];
const BACKENDS = ["cow", "chunked", "s3"] as const;

/** Parse and validate config text. Pure: relative paths are resolved against dirname(file). */
export function parseSchedulerConfig(text: string, file: string): SchedulerConfig {
  const { root, check } = parseYaml(text, file);
  // Problems with the top level itself (missing sections) are blamed on line 1.
  const top: Located = { node: root.node, path: "", line: 1 };
  const sections = check.fields(top, TOP_KEYS, {
    allowEmpty: true,
    what: "a mapping with global, schedules and jobs",
  });

  const global = parseGlobal(check, sections.get("global"), dirname(file));
  const schedules = parseSchedules(check, check.require(sections, "schedules", top));
  const jobs = parseJobs(check, check.require(sections, "jobs", top), schedules, global);
  return { file, ...global, schedules, jobs };
}

/** Read and parse a config file; relative paths in it become absolute. */
export async function loadSchedulerConfig(file: string): Promise<SchedulerConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new ConfigError(file, undefined, `cannot read config: ${errorMessage(e)}`);
  }
  const config = parseSchedulerConfig(text, file);
  // Pin relative paths to today's working directory so they stay valid and unambiguous.
  config.baseDir = resolve(config.baseDir);
  config.statusFile = resolve(config.statusFile);
  return config;
}

type GlobalSettings = Omit<SchedulerConfig, "file" | "schedules" | "jobs">;

function parseGlobal(check: YamlChecker, at: Entry | undefined, configDir: string): GlobalSettings {
  const fields = at
    ? check.fields(at, GLOBAL_KEYS, { allowEmpty: true })
    : new Map<string, Entry>();
  const get = (key: string) => fields.get(key);

  const baseDirEntry = get("base-dir");
  const baseDir = baseDirEntry
    ? configPath(configDir, check.string(baseDirEntry, { nonEmpty: true }))
    : DEFAULT_BASE_DIR;
  const statusFileEntry = get("status-file");
  const statusFile = statusFileEntry
    ? configPath(configDir, check.string(statusFileEntry, { nonEmpty: true }))
    : join(baseDir, "status");

  const workerLimitEntry = get("worker-limit");
  const statusIntervalEntry = get("status-interval");
  const telnetAddrsEntry = get("telnet-addrs");
  const telnetPortEntry = get("telnet-port");
  const callbackEntry = get("backup-completed-callback");
  const failedCallbackEntry = get("backup-failed-callback");
  const callbackTimeoutEntry = get("callback-timeout");
  const backupTimeoutEntry = get("backup-timeout");
  const criticalEntry = get("critical-failures");
  const verifyEveryEntry = get("verify-every");
  const verifyBudgetEntry = get("verify-budget");
  const groupEntry = get("monitoring-group");
  const result: GlobalSettings = {
    baseDir,
    workerLimit: workerLimitEntry ? check.integer(workerLimitEntry, 1) : DEFAULT_WORKER_LIMIT,
    statusFile,
    statusInterval: statusIntervalEntry
      ? duration(check, statusIntervalEntry)
      : DEFAULT_STATUS_INTERVAL,
    telnetAddrs: telnetAddrsEntry ? addresses(check, telnetAddrsEntry) : [...DEFAULT_TELNET_ADDRS],
    telnetPort: telnetPortEntry ? check.integer(telnetPortEntry, 1, 65535) : DEFAULT_TELNET_PORT,
    callbackTimeout: callbackTimeoutEntry
      ? duration(check, callbackTimeoutEntry)
      : DEFAULT_CALLBACK_TIMEOUT,
    backupTimeout: backupTimeoutEntry
      ? duration(check, backupTimeoutEntry)
      : DEFAULT_BACKUP_TIMEOUT,
    criticalFailures: criticalEntry ? check.integer(criticalEntry, 1) : DEFAULT_CRITICAL_FAILURES,
    verifyEvery: verifyEveryEntry
      ? (check.scalar(verifyEveryEntry) === "off" ? 0 : duration(check, verifyEveryEntry))
      : DEFAULT_VERIFY_EVERY,
  };
  if (verifyBudgetEntry) {
    const value = check.scalar(verifyBudgetEntry);
    const bytes = typeof value === "string" || typeof value === "number"
      ? parseSize(value)
      : undefined;
    if (bytes === undefined) {
      check.fail(
        verifyBudgetEntry,
        `expected a size such as 50G, got ${check.describe(verifyBudgetEntry)}`,
      );
    }
    result.verifyBudget = bytes;
  }
  if (callbackEntry) result.completedCallback = program(check, callbackEntry, configDir);
  if (failedCallbackEntry) result.failedCallback = program(check, failedCallbackEntry, configDir);
  if (groupEntry) {
    const value = check.scalar(groupEntry);
    if (typeof value === "number" && Number.isInteger(value) && value >= 0) {
      result.monitoringGroup = String(value);
    } else {
      const name = check.string(groupEntry, { nonEmpty: true });
      if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(name)) {
        check.fail(groupEntry, `invalid group name ${quote(name)}`);
      }
      result.monitoringGroup = name;
    }
  }
  const http = parseHttp(check, fields, configDir);
  if (http) result.http = http;
  const s3Entry = get("s3");
  if (s3Entry) result.s3 = parseS3(check, s3Entry, configDir);
  return result;
}

/** `s3:` of `global`, validated by config/s3_config.ts; errors at the key's line. */
function parseS3(check: YamlChecker, at: Entry, configDir: string): S3Settings {
  // The job's name in the bucket comes from the job, not from the global section.
  const fields = check.fields(at, S3_KEYS.filter((k) => k !== "job"), {
    what: "a mapping with at least bucket",
  });
  const raw: Record<string, unknown> = {};
  for (const [k, e] of fields) raw[k] = check.scalar(e);
  const s3 = validateS3(
    raw,
    (key, problem) => check.fail(key ? fields.get(key) ?? at : at, problem),
  );
  if (s3.credentialsFile) s3.credentialsFile = configPath(configDir, s3.credentialsFile);
  return s3;
}

/**
 * `http-*` keys. The endpoint is on when `http-port` is set. Tokens never appear in an error
 * message: a mistyped token is reported by its client name only.
 */
function parseHttp(
  check: YamlChecker,
  fields: Map<string, Entry>,
  configDir: string,
): HttpConfig | undefined {
  const portEntry = fields.get("http-port");
  const others = ["http-addrs", "http-tokens", "http-tls-cert", "http-tls-key"]
    .map((k) => fields.get(k)).filter((e): e is Entry => e !== undefined);
  if (!portEntry) {
    if (others.length) {
      check.fail(others[0], "needs http-port (the HTTP endpoint is off without it)");
    }
    return undefined;
  }
  const addrsEntry = fields.get("http-addrs");
  const http: HttpConfig = {
    port: check.integer(portEntry, 1, 65535),
    addrs: addrsEntry ? addresses(check, addrsEntry) : [...DEFAULT_HTTP_ADDRS],
    tokens: Object.create(null),
  };
  if (http.addrs.length === 0) check.fail(addrsEntry!, "needs at least one address");
  const remote = http.addrs.filter((a) => !parseAddress(a)?.loopback);
  const tokensEntry = fields.get("http-tokens");
  if (tokensEntry) {
    const seen = new Map<string, string>();
    for (const client of check.entries(tokensEntry, { what: "a mapping of client name: token" })) {
      const token = check.scalar(client);
      if (typeof token !== "string") {
        check.fail(client, "the token must be a string (quote it)");
      }
      if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
        check.fail(
          client,
          `the token must be at least ${MIN_TOKEN_LENGTH} characters without whitespace`,
        );
      }
      const other = seen.get(token);
      if (other !== undefined) check.fail(client, `same token as client ${quote(other)}`);
      seen.set(token, client.name);
      http.tokens[client.name] = token;
    }
  }
  const cert = fields.get("http-tls-cert"), key = fields.get("http-tls-key");
  if ((cert === undefined) !== (key === undefined)) {
    check.fail((cert ?? key)!, "http-tls-cert and http-tls-key go together");
  }
  if (cert && key) {
    http.tlsCert = configPath(configDir, check.string(cert, { nonEmpty: true }));
    http.tlsKey = configPath(configDir, check.string(key, { nonEmpty: true }));
  }
  for (const addr of http.addrs) {
    if (!parseAddress(addr)) {
      check.fail(addrsEntry!, `not an IP address: ${quote(addr)} (host names are not accepted)`);
    }
  }
  // Anyone on the network could read the status or start backups: never without both.
  if (remote.length && (Object.keys(http.tokens).length === 0 || !http.tlsCert)) {
    check.fail(
      addrsEntry!,
      `non-loopback address ${remote[0]} needs http-tokens and http-tls-cert/http-tls-key`,
    );
  }
  return http;
}

/** A program path (relative to the config file) or a bare name looked up in PATH. */
function program(check: YamlChecker, at: Entry, configDir: string): string {
  const value = check.string(at, { nonEmpty: true });
  return value.includes("/") ? configPath(configDir, value) : value;
}

/** Relative paths are relative to the config file, not to wherever the daemon was started. */
function configPath(configDir: string, path: string): string {
  const full = isAbsolute(path) ? normalize(path) : join(configDir, path);
  return full.length > 1 && full.endsWith("/") ? full.slice(0, -1) : full;
}

/**
 * 2.1 takes a comma-separated string; a YAML list is accepted too. An empty string or list
 * means no telnet listener.
 */
function addresses(check: YamlChecker, at: Entry): string[] {
  const items = check.list(at);
  if (items) {
    return items.map((item) => {
      const addr = check.string(item).trim();
      if (addr === "") check.fail(item, "empty address");
      return addr;
    });
  }
  const value = check.scalar(at);
  if (typeof value !== "string") {
    check.fail(
      at,
      `expected addresses as a comma-separated string or a list, got ${check.describe(at)}`,
    );
  }
  if (value.trim() === "") return [];
  const addrs = value.split(",").map((a) => a.trim());
  if (addrs.includes("")) check.fail(at, `empty address in ${quote(value)}`);
  return addrs;
}

function parseSchedules(check: YamlChecker, at: Entry): Record<string, ScheduleDef> {
  // Null-prototype records: a schedule or job called "constructor" must not find Object's.
  const schedules: Record<string, ScheduleDef> = Object.create(null);
  for (const entry of check.entries(at, { allowEmpty: true })) {
    if (entry.name === "") check.fail(entry, "schedule name must not be empty");
    const tags = check.entries(entry, { allowEmpty: true, what: "a mapping of tags" });
    if (tags.length === 0) check.fail(entry, "schedule has no tags");
    const def: ScheduleDef = Object.create(null);
    for (const tag of tags) {
      const problem = tagNameProblem(tag.name);
      if (problem) check.fail(tag, `invalid tag name (${problem})`);
      const fields = check.fields(tag, TAG_KEYS, { what: "a mapping with interval and keep" });
      const interval = duration(check, check.require(fields, "interval", tag));
      const keep = check.integer(check.require(fields, "keep", tag), 1);
      def[tag.name] = { interval, keep };
    }
    schedules[entry.name] = def;
  }
  return schedules;
}

function parseJobs(
  check: YamlChecker,
  at: Entry,
  schedules: Record<string, ScheduleDef>,
  global: GlobalSettings,
): Record<string, JobConfig> {
  const jobs: Record<string, JobConfig> = Object.create(null);
  for (const entry of check.entries(at, { allowEmpty: true })) {
    const name = entry.name;
    const problem = jobNameProblem(name);
    if (problem) check.fail(entry, `invalid job name (${problem})`);
    // The status file and a job directory must not be the same path.
    if (join(global.baseDir, name) === global.statusFile) {
      check.fail(entry, `job directory would be the status file ${global.statusFile}`);
    }
    const fields = check.fields(entry, JOB_KEYS);

    const scheduleEntry = check.require(fields, "schedule", entry);
    const schedule = check.string(scheduleEntry);
    if (!Object.hasOwn(schedules, schedule)) {
      const known = Object.keys(schedules);
      check.fail(
        scheduleEntry,
        `no schedule named ${quote(schedule)} (${
          known.length ? `defined: ${known.join(", ")}` : "no schedules defined"
        })`,
      );
    }

    let backend: JobConfig["backend"];
    const backendEntry = fields.get("backend");
    if (backendEntry) {
      const value = check.string(backendEntry);
      if (!(BACKENDS as readonly string[]).includes(value)) {
        check.fail(backendEntry, `unknown backend ${quote(value)} (expected ${listOf(BACKENDS)})`);
      }
      backend = value as JobConfig["backend"];
    }

    const { mapping } = checkSource(check, check.require(fields, "source", entry));
    const job: JobConfig = { name, schedule, scheduleDef: schedules[schedule], source: mapping };
    if (backend) job.backend = backend;
    if (backend === "s3") {
      if (!global.s3) check.fail(backendEntry!, "backend s3 needs an s3 section in global");
      job.s3 = { ...global.s3, job: name };
    }
    const verifyEntry = fields.get("verify");
    if (verifyEntry) {
      const value = check.string(verifyEntry);
      if (value !== "changed" && value !== "full") {
        check.fail(verifyEntry, `unknown verify mode ${quote(value)} (expected changed or full)`);
      }
      job.verify = value;
    }
    jobs[name] = job;
  }
  return jobs;
}

/** Why a job name cannot be a directory directly below base-dir, or undefined if it can. */
export function jobNameProblem(name: string): string | undefined {
  if (name === "") return "must not be empty";
  if (/\p{Cc}/u.test(name)) return "must not contain NUL or control characters";
  if (name.includes("/")) return 'must not contain "/"';
  if (name.startsWith(".")) return 'must not start with "."';
  // The telnet shell splits `run JOB` on whitespace.
  if (/\s/u.test(name)) return "must not contain whitespace";
  if (new TextEncoder().encode(name).length > 255) return "must be at most 255 bytes long";
  return undefined;
}

/** Tags travel comma-separated on the `backy backup` command line; `manual:` is reserved. */
export function tagNameProblem(name: string): string | undefined {
  if (name === "") return "must not be empty";
  if (/[\s,\p{Cc}]/u.test(name)) return "must not contain commas, whitespace or control characters";
  if (name.startsWith("manual:")) return 'the prefix "manual:" is reserved for manual backups';
  return undefined;
}
