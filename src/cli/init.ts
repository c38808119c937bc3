/** `backy init [--backend cow|chunked] TYPE SOURCE` (spec 1.2, design D2). */
import { resolve } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { exists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { JobDir } from "../repo/jobdir.ts";
import { SOURCE_TYPES, sourceFromCli, type SourceType } from "../repo/jobconfig.ts";
import type { Backend } from "../repo/revision.ts";
import { probeBackend } from "../store/probe.ts";
import { BACKENDS } from "../store/store.ts";

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
): Promise<{ backend: Backend }> {
  if (!(SOURCE_TYPES as readonly string[]).includes(type)) {
    throw new BackyError(`unknown source type '${type}' (known: ${SOURCE_TYPES.join(", ")})`);
  }
  if (backend !== undefined && !(BACKENDS as readonly string[]).includes(backend)) {
    throw new BackyError(`unknown backend '${backend}' (known: ${BACKENDS.join(", ")})`);
  }
  const source = sourceFromCli(type, spec);
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
  await JobDir.writeConfig(path, { type: type as SourceType, source, backend: chosen });
  log.info("Initialized job", { dir: path, type, backend: chosen });
  if (type === "file" && !(await exists(resolve(path, String(source.filename))))) {
    log.warning("Source does not exist (yet)", { source: source.filename });
  }
  return { backend: chosen };
}
