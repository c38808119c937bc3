/** Which Source serves a job: the one place that switches on the source type. */
import type { SourceSettings } from "../config/source_config.ts";
import { CephSource } from "./ceph/source.ts";
import { FileSource } from "./file.ts";
import type { Source } from "./source.ts";

/** The source for a job directory's typed source settings. */
export function sourceFor(jobDir: string, settings: SourceSettings): Source {
  switch (settings.type) {
    case "file":
      return new FileSource(jobDir, settings);
    case "ceph-rbd":
    case "flyingcircus":
      return new CephSource(settings);
  }
}
