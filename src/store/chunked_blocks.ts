/**
 * Blocks of a chunked revision (design D3): content-addressed chunk files shared by all of
 * the job's revisions; the offset does not matter, only the digest.
 */
import { chunkExists, readChunk, verifyChunk, writeChunk } from "./chunkfile.ts";
import type { BlockStore } from "./block_store.ts";
import { DamagedBlockError } from "./block_store.ts";
import { errorMessage } from "../util/errors.ts";

export class ChunkedBlocks implements BlockStore {
  constructor(readonly chunks: string) {}

  get(offset: number, length: number, digest: Uint8Array | undefined, into?: Uint8Array) {
    if (digest === undefined) {
      throw new DamagedBlockError(
        `block at offset ${offset} has no digest: a chunked revision needs its index`,
        this.chunks,
      );
    }
    return readChunk(this.chunks, digest, length, into);
  }

  check(_offset: number, length: number, digest: Uint8Array | null) {
    if (digest === null) return { ok: true }; // zero blocks are never stored
    try {
      verifyChunk(this.chunks, digest, length);
      return { ok: true };
    } catch (e) {
      return { ok: false, reason: errorMessage(e) };
    }
  }

  hasParentBlock(_offset: number, digest: Uint8Array): boolean {
    // A chunk that was lost or moved aside as corrupt is stored anew.
    return chunkExists(this.chunks, digest);
  }

  parentBytes(_offset: number, _length: number, digest: Uint8Array, parentLength: number) {
    return readChunk(this.chunks, digest, parentLength);
  }

  write(_offset: number, data: Uint8Array, digest: Uint8Array): number {
    return writeChunk(this.chunks, digest, data);
  }

  zero(): void {}

  close(): void {}
}
