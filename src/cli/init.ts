/**
 * `backy init [--backend cow|chunked|s3] TYPE SOURCE` (spec 1.2, design D2), and
 * `backy init s3 BUCKET/JOB`: a job directory for a job another host keeps in a bucket.
 */
import { basename, resolve } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { exists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { JobDir } from "../repo/jobdir.ts";
import { SOURCE_TYPES, sourceFromCli, type SourceType } from "../repo/jobconfig.ts";
import type { Backend } from "../repo/revision.ts";
import { probeBackend } from "../store/probe.ts";
import { BACKENDS, storeFor } from "../store/store.ts";
import { type S3Settings, validateS3 } from "../config/s3_config.ts";
import { loadSchedulerConfig } from "../config/scheduler_config.ts";
import { S3Client } from "../store/s3_client.ts";
import { s3Endpoint } from "../store/s3.ts";
import { configKey } from "../store/s3_layout.ts";
import { parseJobConfig } from "../repo/jobconfig.ts";

const log = logger("init");

/** The command line with a flyingcircus Consul token masked, for the log (design D18). */
export function redactArgv(argv: string[]): string[] {
  const at = argv.indexOf("flyingcircus");
  if (at < 0 || !argv.slice(0, at).includes("init") || at + 1 >= argv.length) return argv;
  const parts = argv[at + 1].split(",");
  if (parts.length < 3) return argv;
  const out = [...argv];
  out[at + 1] = [...parts.slice(0, 2), "***", ...parts.slice(3)].join(",");
  return out;
}

export async function init(
  dir: string,
  type: string,
  spec: string,
  backend?: string,
  s3?: S3Settings,
): Promise<{ backend: Backend }> {
  if (!(SOURCE_TYPES as readonly string[]).includes(type)) {
    throw new BackyError(`unknown source type '${type}' (known: ${SOURCE_TYPES.join(", ")})`);
  }
  if (backend !== undefined && !(BACKENDS as readonly string[]).includes(backend)) {
    throw new BackyError(`unknown backend '${backend}' (known: ${BACKENDS.join(", ")})`);
  }
  const source = sourceFromCli(type, spec);
  if (backend === "s3" && !s3) {
    throw new BackyError("backend s3 needs a bucket: --bucket NAME or global.s3 in the config");
  }
  const path = resolve(dir);
  const info = await Deno.stat(path).catch(() => undefined);
  if (info && !info.isDirectory) {
    throw new BackyError(`cannot create job directory ${path}: it exists and is not a directory`);
  }
  if (await exists(JobDir.configPath(path))) {
    throw new BackyError(`${path} is already a job directory (config exists); not touching it`);
  }
  try {
    // Readable by its owner only (design D18): configs, revisions and data live here.
    if (!info) await Deno.mkdir(path, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new BackyError(`cannot create job directory ${path}: ${errorMessage(e)}`);
  }
  const chosen = (backend as Backend | undefined) ?? await probeBackend(path);
  await JobDir.writeConfig(path, {
    type: type as SourceType,
    source,
    backend: chosen,
    ...(chosen === "s3" ? { s3: { ...s3!, job: s3!.job ?? basename(path) } } : {}),
  });
  log.info("Initialized job", { dir: path, type, backend: chosen });
  if (type === "file" && !(await exists(resolve(path, String(source.filename))))) {
    log.warning("Source does not exist (yet)", { source: source.filename });
  }
  return { backend: chosen };
}

/**
 * The s3 settings for `init`: the scheduler config's `global.s3` (when `config` exists),
 * `bucket` (and an optional job name) from the command line over it.
 */
export async function s3SettingsFor(
  config: string | undefined,
  bucket: string | undefined,
  job?: string,
): Promise<S3Settings | undefined> {
  let base: S3Settings | undefined;
  if (config !== undefined && await exists(config)) base = (await loadSchedulerConfig(config)).s3;
  if (!base && bucket === undefined) return undefined;
  const raw: Record<string, unknown> = { bucket: bucket ?? base!.bucket };
  if (job !== undefined) raw.job = job;
  const merged = {
    ...base,
    ...validateS3(raw, (key, problem) => {
      throw new BackyError(`${key === "job" ? "job name" : "bucket"}: ${problem}`);
    }),
  };
  if (base) {
    for (const k of ["leaseTtl", "gcGrace", "gcInterval", "uploads", "attempts"] as const) {
      merged[k] = base[k];
    }
  }
  return merged;
}

/**
 * `backy init s3 BUCKET/JOB`: a new job directory for a job kept in the bucket (by another
 * host, or by a host that was lost): its config from the bucket, then its revisions.
 */
export async function initFromBucket(dir: string, s3: S3Settings): Promise<number> {
  const path = resolve(dir);
  if (await exists(JobDir.configPath(path))) {
    throw new BackyError(`${path} is already a job directory (config exists); not touching it`);
  }
  const client = new S3Client(s3Endpoint(s3));
  await client.checkBucket();
  const key = configKey(s3.job!);
  const text = await client.get(key);
  if (!text) {
    throw new BackyError(`${client.where} has no job '${s3.job}' (no ${key})`);
  }
  const remote = parseJobConfig(new TextDecoder().decode(text), `s3://${s3.bucket}/${key}`);
  const info = await Deno.stat(path).catch(() => undefined);
  if (info && !info.isDirectory) {
    throw new BackyError(`cannot create job directory ${path}: it exists and is not a directory`);
  }
  if (!info) await Deno.mkdir(path, { recursive: true, mode: 0o700 });
  await JobDir.writeConfig(path, {
    type: remote.type,
    source: remote.source,
    backend: "s3",
    s3,
  });
  const job = await JobDir.open(path);
  const pulled = await storeFor(job).pull!();
  log.info("Initialized job from the bucket", {
    dir: path,
    job: s3.job,
    bucket: s3.bucket,
    revisions: pulled.fetched,
  });
  return pulled.fetched + pulled.removed + pulled.published;
}
