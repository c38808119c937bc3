/**
 * The job directory's `config` (spec 2.2): the source mapping with its `type`, plus the
 * storage `backend` chosen at init and, when the scheduler wrote it, the job's `schedule`.
 */
import YAML from "yaml";
import { BackyError, errorMessage } from "../util/errors.ts";
import { SOURCE_TYPES, type SourceSettings, validateSource } from "../config/source_config.ts";
import type { Backend } from "./revision.ts";
import type { Schedule } from "./retention.ts";
import { parseDuration } from "../config/duration.ts";
import { type S3Settings, serializeS3, validateS3 } from "../config/s3_config.ts";

export { SOURCE_TYPES };
export type SourceType = typeof SOURCE_TYPES[number];

export interface JobDirConfig {
  type: SourceType;
  /** The source keys as written (kept for writing the file back unchanged). */
  source: Record<string, unknown>;
  /** The same, validated and typed, defaults applied. */
  settings: SourceSettings;
  /** Legacy 2.1 jobs have no backend key: their revisions are raw images (cow). */
  backend: Backend;
  schedule?: Record<string, { interval: number | string; keep: number }>;
  /**
   * How a backup proves its revision (design D16): `changed` reads back the blocks it wrote
   * (what it shares with a verified parent is proven by the index; the scrub re-reads
   * those), `full` reads back every block, as before. Default `changed`.
   */
  verify?: "changed" | "full";
  /** Where an s3 job's data lives (backend s3 only). */
  s3?: S3Settings;
}

export function parseJobConfig(text: string, file: string): JobDirConfig {
  let data: unknown;
  try {
    data = YAML.parse(text);
  } catch (e) {
    throw new BackyError(`invalid job config ${file}: ${errorMessage(e).split("\n")[0]}`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new BackyError(`invalid job config ${file}: not a YAML mapping`);
  }
  const { type, backend, schedule, verify, s3, ...source } = data as Record<string, unknown>;
  if (typeof type !== "string" || !(SOURCE_TYPES as readonly string[]).includes(type)) {
    throw new BackyError(
      `unknown source type '${type}' in ${file} (known: ${SOURCE_TYPES.join(", ")})`,
    );
  }
  // The same rules as the scheduler config's `source:` sections (unknown keys, types).
  const { settings } = validateSource({ type, ...source }, { file, path: "" });
  // `cowfile` is backy 2.2's name for the same raw-image layout.
  if (
    backend !== undefined && backend !== "cow" && backend !== "chunked" &&
    backend !== "cowfile" && backend !== "s3"
  ) {
    throw new BackyError(
      `job config ${file}: backend must be 'cow', 'chunked' or 's3', not '${backend}'`,
    );
  }
  if ((backend === "s3") !== (s3 !== undefined)) {
    throw new BackyError(`job config ${file}: backend s3 and an s3 mapping go together`);
  }
  const s3Settings = s3 === undefined ? undefined : validateS3(s3, (key, problem) => {
    throw new BackyError(`job config ${file}: s3${key ? `.${key}` : ""}: ${problem}`);
  });
  if (schedule !== undefined && (schedule === null || typeof schedule !== "object")) {
    throw new BackyError(`job config ${file}: schedule must be a mapping`);
  }
  if (verify !== undefined && verify !== "changed" && verify !== "full") {
    throw new BackyError(`job config ${file}: verify must be 'changed' or 'full', not '${verify}'`);
  }
  return {
    type: type as SourceType,
    source,
    settings,
    backend: backend === "chunked" || backend === "s3" ? backend : "cow",
    schedule: schedule as JobDirConfig["schedule"],
    ...(verify ? { verify: verify as "changed" | "full" } : {}),
    ...(s3Settings ? { s3: s3Settings } : {}),
  };
}

/**
 * The schedule the scheduler copied into a job's config (intervals in seconds), or
 * undefined when there is none (a job made by `init` that the scheduler never ran).
 */
export function jobSchedule(cfg: JobDirConfig, file: string): Schedule | undefined {
  const raw = cfg.schedule;
  if (!raw || Object.keys(raw).length === 0) return undefined;
  const schedule: Schedule = {};
  for (const [tag, def] of Object.entries(raw)) {
    const interval = parseDuration(def?.interval as string | number);
    const keep = Number(def?.keep);
    if (interval === undefined || !Number.isInteger(keep) || keep < 1) {
      throw new BackyError(`${file}: invalid schedule entry for tag '${tag}'`);
    }
    schedule[tag] = { interval, keep };
  }
  return schedule;
}

export function serializeJobConfig(cfg: Omit<JobDirConfig, "settings">): string {
  const out: Record<string, unknown> = { type: cfg.type, ...cfg.source, backend: cfg.backend };
  if (cfg.s3) out.s3 = serializeS3(cfg.s3);
  if (cfg.schedule) out.schedule = cfg.schedule;
  if (cfg.verify) out.verify = cfg.verify;
  return YAML.stringify(out);
}

/** Source syntax on the `init` command line (spec 1.2). */
export function sourceFromCli(type: string, spec: string): Record<string, unknown> {
  switch (type) {
    case "file":
      if (!spec) throw new BackyError("file source needs a PATH");
      return { filename: spec };
    case "ceph-rbd": {
      const parts = spec.split("/");
      if (parts.length !== 2 || !parts[0] || !parts[1]) {
        throw new BackyError("ceph source must be initialized with POOL/IMAGE");
      }
      return { pool: parts[0], image: parts[1] };
    }
    case "flyingcircus": {
      const parts = spec.split(",").map((p) => p.trim());
      const img = (parts[0] ?? "").split("/");
      if (
        parts.length < 2 || parts.length > 3 || img.length !== 2 || !img[0] || !img[1] || !parts[1]
      ) {
        throw new BackyError(
          "flyingcircus source must be initialized with POOL/IMAGE,VM[,CONSUL_ACL_TOKEN]",
        );
      }
      return { pool: img[0], image: img[1], vm: parts[1], consul_acl_token: parts[2] ?? null };
    }
    default:
      throw new BackyError(`unknown source type '${type}' (known: ${SOURCE_TYPES.join(", ")})`);
  }
}
