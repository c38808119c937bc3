/**
 * Settings of the s3 store: the `s3:` mapping of the scheduler config's `global` section
 * (copied into each s3 job's `config`), validated here; and how the connection is completed
 * from the environment and an AWS credentials file, as the AWS tools do. No secret is ever
 * kept in a backy config file: keys come from the environment or a credentials file.
 */
import { parseDuration } from "./duration.ts";

/** The `s3:` keys (kebab-case, as written in YAML). */
export const S3_KEYS = [
  "endpoint",
  "bucket",
  "region",
  "credentials-file",
  "profile",
  "job",
  "host",
  "lease-ttl",
  "gc-grace",
  "gc-interval",
  "uploads",
  "attempts",
] as const;

/** Validated `s3:` settings, defaults applied (durations in seconds). */
export interface S3Settings {
  /** Unset: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. */
  endpoint?: string;
  bucket: string;
  /** Unset: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1. */
  region?: string;
  /** AWS-style INI file with the keys; unset: the environment, then ~/.aws/credentials. */
  credentialsFile?: string;
  /** Profile in the credentials file; unset: AWS_PROFILE, else "default". */
  profile?: string;
  /** The job's name in the bucket (job configs only; default: the directory's name). */
  job?: string;
  /** This host's name in leases (default: the system's host name). */
  host?: string;
  leaseTtl: number;
  gcGrace: number;
  gcInterval: number;
  /** Uploads in flight per data Worker. */
  uploads: number;
  /** Attempts per request on transient errors. */
  attempts: number;
}

export const S3_DEFAULTS = {
  leaseTtl: 120,
  gcGrace: 86400,
  gcInterval: 86400,
  uploads: 8,
  attempts: 6,
};

/** Secret-free credentials, as the store passes them to its Workers. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

const camel = (k: string) => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * Validates an `s3:` mapping; `fail(key, problem)` reports (and throws). Bucket names follow
 * S3's rules (3-63 lowercase letters, digits, dots, hyphens); job names those of job
 * directories (no "/", no leading dot).
 */
export function validateS3(
  raw: unknown,
  fail: (key: string | undefined, problem: string) => never,
): S3Settings {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    fail(undefined, "s3 must be a mapping with at least 'bucket'");
  }
  const m = raw as Record<string, unknown>;
  for (const k of Object.keys(m)) {
    if (!(S3_KEYS as readonly string[]).includes(k)) {
      fail(k, `unknown key (known: ${S3_KEYS.join(", ")})`);
    }
  }
  const str = (k: string): string | undefined => {
    const v = m[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || v.trim() === "") fail(k, "expected a non-empty string");
    return v.trim();
  };
  const bucket = str("bucket");
  if (bucket === undefined) fail("bucket", "missing (the bucket every s3 job shares)");
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    fail("bucket", `invalid bucket name '${bucket}' (3-63 lowercase letters, digits, . and -)`);
  }
  const endpoint = str("endpoint");
  if (endpoint !== undefined && !/^https?:\/\/[^/\s?#]+\/?$/.test(endpoint)) {
    fail("endpoint", `expected http(s)://HOST[:PORT], got '${endpoint}'`);
  }
  const job = str("job");
  if (job !== undefined && (job.includes("/") || job.startsWith(".") || /[\s\p{Cc}]/u.test(job))) {
    fail("job", `invalid job name '${job}' (no "/", whitespace or leading ".")`);
  }
  const dur = (k: string, dflt: number): number => {
    const v = m[k];
    if (v === undefined || v === null) return dflt;
    const s = typeof v === "string" || typeof v === "number" ? parseDuration(v) : undefined;
    if (s === undefined) fail(k, `invalid duration '${v}' (e.g. 90s, 10m, 1d)`);
    return s;
  };
  const int = (k: string, dflt: number, min: number, max: number): number => {
    const v = m[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      fail(k, `expected an integer from ${min} to ${max}`);
    }
    return v;
  };
  const out: S3Settings = {
    bucket,
    leaseTtl: dur("lease-ttl", S3_DEFAULTS.leaseTtl),
    gcGrace: dur("gc-grace", S3_DEFAULTS.gcGrace),
    gcInterval: dur("gc-interval", S3_DEFAULTS.gcInterval),
    uploads: int("uploads", S3_DEFAULTS.uploads, 1, 64),
    attempts: int("attempts", S3_DEFAULTS.attempts, 1, 20),
  };
  if (out.leaseTtl < 10) fail("lease-ttl", "must be at least 10s");
  for (const k of ["endpoint", "region", "credentials-file", "profile", "job", "host"]) {
    const v = k === "endpoint" ? endpoint : k === "job" ? job : str(k);
    if (v !== undefined) (out as unknown as Record<string, unknown>)[camel(k)] = v;
  }
  return out;
}

/** The settings as an `s3:` mapping for a YAML file (defaults left out). */
export function serializeS3(s: S3Settings): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of S3_KEYS) {
    const v = (s as unknown as Record<string, unknown>)[camel(k)];
    const dflt = (S3_DEFAULTS as Record<string, unknown>)[camel(k)];
    if (v !== undefined && v !== dflt) out[k] = v;
  }
  return out;
}

/**
 * One profile of an AWS credentials file (INI: `[profile]`, `key = value`, `#`/`;`
 * comments), or undefined when the profile is missing or has no key pair.
 */
export function parseCredentials(text: string, profile: string): S3Credentials | undefined {
  let section: string | undefined;
  const found: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const head = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line);
    if (head) {
      section = head[1];
      continue;
    }
    const eq = line.indexOf("=");
    if (section !== profile || eq < 0) continue;
    found[line.slice(0, eq).trim().toLowerCase()] = line.slice(eq + 1).trim();
  }
  const accessKeyId = found.aws_access_key_id, secretAccessKey = found.aws_secret_access_key;
  if (!accessKeyId || !secretAccessKey) return undefined;
  const c: S3Credentials = { accessKeyId, secretAccessKey };
  if (found.aws_session_token) c.sessionToken = found.aws_session_token;
  return c;
}

/** Where the connection's parts come from: the environment and files. */
export interface S3Env {
  env: Record<string, string | undefined>;
  /** Reads a credentials file (after checking its permissions); undefined when absent. */
  readFile(path: string): string | undefined;
  home?: string;
}

/** The completed connection, and where its credentials came from (for messages). */
export interface S3Connection extends S3Credentials {
  endpoint: string;
  bucket: string;
  region: string;
  credentialsFrom: string;
}

/**
 * Completes settings as AWS tools do: endpoint from the settings, AWS_ENDPOINT_URL_S3 or
 * AWS_ENDPOINT_URL; region from the settings, AWS_REGION or AWS_DEFAULT_REGION (else
 * us-east-1); keys from the settings' credentials file, else AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN), else AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials (profile: settings, AWS_PROFILE, "default"). Throws a plain Error
 * with the reason when something is missing.
 */
export function resolveS3(s: S3Settings, from: S3Env): S3Connection {
  const e = from.env;
  const endpoint = s.endpoint ?? e.AWS_ENDPOINT_URL_S3 ?? e.AWS_ENDPOINT_URL;
  if (!endpoint) {
    throw new Error("no S3 endpoint: set s3.endpoint in the config or AWS_ENDPOINT_URL");
  }
  const region = s.region ?? e.AWS_REGION ?? e.AWS_DEFAULT_REGION ?? "us-east-1";
  const profile = s.profile ?? e.AWS_PROFILE ?? "default";
  const fromFile = (path: string): S3Connection | undefined => {
    const text = from.readFile(path);
    if (text === undefined) return undefined;
    const c = parseCredentials(text, profile);
    if (!c) throw new Error(`no key pair for profile '${profile}' in ${path}`);
    return { endpoint, bucket: s.bucket, region, ...c, credentialsFrom: `${path} [${profile}]` };
  };
  if (s.credentialsFile) {
    const c = fromFile(s.credentialsFile);
    if (!c) throw new Error(`credentials file ${s.credentialsFile} does not exist`);
    return c;
  }
  if (e.AWS_ACCESS_KEY_ID && e.AWS_SECRET_ACCESS_KEY) {
    const c: S3Connection = {
      endpoint,
      bucket: s.bucket,
      region,
      accessKeyId: e.AWS_ACCESS_KEY_ID,
      secretAccessKey: e.AWS_SECRET_ACCESS_KEY,
      credentialsFrom: "the environment (AWS_ACCESS_KEY_ID)",
    };
    if (e.AWS_SESSION_TOKEN) c.sessionToken = e.AWS_SESSION_TOKEN;
    return c;
  }
  const shared = e.AWS_SHARED_CREDENTIALS_FILE ??
    (from.home ? `${from.home}/.aws/credentials` : undefined);
  const c = shared ? fromFile(shared) : undefined;
  if (!c) {
    throw new Error(
      "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, s3.credentials-file " +
        "or ~/.aws/credentials",
    );
  }
  return c;
}
