/** The `file` source (spec 3.2): a plain image file or block device, read in place. */
import { isAbsolute, join } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { BLOCK_SIZE, blockCount } from "../repo/index_file.ts";
import { blocksWithData, dataExtents } from "../util/native/extents.ts";
import type { Revision } from "../repo/revision.ts";
import type { FileSourceSettings } from "../config/source_config.ts";
import type { Source, SourceEvent, SourceRun } from "./source.ts";

export interface FileSourceInfo {
  path: string;
  size: number;
}

/** Resolves and checks the source; relative names are relative to the job directory. */
export async function openFileSource(jobDir: string, filename: string): Promise<FileSourceInfo> {
  const path = isAbsolute(filename) ? filename : join(jobDir, filename);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new BackyError(`source ${path} does not exist`);
    throw new BackyError(`cannot access source ${path}: ${errorMessage(e)}`);
  }
  if (!info.isFile && !info.isBlockDevice) {
    throw new BackyError(`source ${path} is not a regular file or block device`);
  }
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new BackyError(`cannot read source ${path}: ${errorMessage(e)}`);
  }
  try {
    // stat reports 0 for block devices; seeking to the end gives their size.
    const size = info.isFile ? info.size : await f.seek(0, Deno.SeekMode.End);
    return { path, size };
  } finally {
    f.close();
  }
}

/**
 * Every block with data is read by the Workers themselves, with positional reads (design
 * D5); blocks that are all hole (SEEK_DATA/SEEK_HOLE) are zero without being read, so a
 * sparse image costs what its data costs. Whether a block changed is found by hashing.
 */
export class FileSource implements Source {
  readonly workersPerCore = 1;
  #file: FileSourceInfo | undefined;

  constructor(readonly jobDir: string, readonly settings: FileSourceSettings) {}

  async prepare(candidates: Revision[]) {
    this.#file = await openFileSource(this.jobDir, this.settings.filename);
    return {
      parent: candidates.at(-1),
      info: { source: this.#file.path, size: this.#file.size },
    };
  }

  start(): Promise<SourceRun> {
    const { path, size } = this.#file!;
    const extents = dataExtents(path, size);
    const withData = extents ? blocksWithData(extents, size, BLOCK_SIZE) : undefined;
    let holes = 0;
    async function* events(): AsyncGenerator<SourceEvent> {
      yield { kind: "size", size };
      for (let block = 0; block < blockCount(size); block++) {
        if (withData && !withData[block]) {
          holes++;
          yield { kind: "zero", block };
        } else yield { kind: "file", block, path };
      }
    }
    return Promise.resolve({
      events: events(),
      recycle() {},
      reread: () => ({ from: "file" as const, path }),
      stats: () => (withData ? { hole_blocks: holes } : {}),
      close: () => Promise.resolve(),
    });
  }

  finish(): Promise<void> {
    return Promise.resolve();
  }
}
