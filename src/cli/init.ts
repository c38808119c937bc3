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
  if (await exists(JobDir.configPath(path))) {
    throw new BackyError(`${path} is already a job directory (config exists); not touching it`);
  }
  try {
    await Deno.mkdir(path, { recursive: true });
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
