/**
 * `backy check -c CONFIG`: a Nagios plugin over the status file (spec 5), exit codes
 * 0 OK, 1 WARNING (a job's last backup failed verification), 2 CRITICAL, 3 UNKNOWN.
 */
import YAML from "yaml";
import { errorMessage } from "../util/errors.ts";
import { loadSchedulerConfig } from "../config/scheduler_config.ts";

export interface CheckResult {
  code: 0 | 1 | 2 | 3;
  text: string;
}

export const STALE_SECONDS = 300;

export async function check(configFile: string, now = Date.now()): Promise<CheckResult> {
  let statusFile: string;
  try {
    statusFile = (await loadSchedulerConfig(configFile)).statusFile;
  } catch (e) {
    return { code: 3, text: `UNKNOWN: ${errorMessage(e)}` };
  }
  let text: string;
  let mtime: number;
  try {
    text = await Deno.readTextFile(statusFile);
    mtime = (await Deno.stat(statusFile)).mtime?.getTime() ?? 0;
  } catch {
    return { code: 3, text: `UNKNOWN: No status file found at ${statusFile}` };
  }
  if (now - mtime > STALE_SECONDS * 1000) {
    return { code: 2, text: "CRITICAL: Status file is older than 5 minutes" };
  }
  let entries: Record<string, unknown>[];
  try {
    const data = YAML.parse(text) ?? [];
    if (!Array.isArray(data)) throw new Error("not a list");
    entries = data;
  } catch (e) {
    return {
      code: 3,
      text: `UNKNOWN: Status file ${statusFile} is unreadable: ${errorMessage(e)}`,
    };
  }
  const late = entries.filter((e) => e.sla !== "OK");
  if (late.length) {
    return {
      code: 2,
      text: [
        `CRITICAL: ${late.length} jobs not within SLA`,
        ...late.map((e) => `${e.job} (last time: ${e.last_time})`),
      ].join("\n"),
    };
  }
  const broken = entries.filter((e) => typeof e.problem === "string" && e.problem);
  if (broken.length) {
    return {
      code: 1,
      text: [
        `WARNING: ${broken.length} jobs with failed verification`,
        ...broken.map((e) => `${e.job}: ${e.problem}`),
      ].join("\n"),
    };
  }
  return { code: 0, text: `OK: ${entries.length} jobs within SLA` };
}
