/** Opens the Worker-side block face of a store for a StoreRef (see block_store.ts). */
import type { BlockStore, StoreRef } from "./block_store.ts";
import { CowBlocks } from "./cow_blocks.ts";
import { ChunkedBlocks } from "./chunked_blocks.ts";
import { S3Blocks } from "./s3_blocks.ts";

const KINDS: {
  [K in StoreRef["backend"]]: (ref: Extract<StoreRef, { backend: K }>) => BlockStore;
} = {
  cow: (ref) => new CowBlocks(ref.image),
  chunked: (ref) => new ChunkedBlocks(ref.chunks),
  s3: (ref) => new S3Blocks(ref),
};

/** The block face for `ref` (one instance per Worker and ref, kept while the Worker runs). */
export function openBlocks(ref: StoreRef): BlockStore {
  return (KINDS[ref.backend] as (r: StoreRef) => BlockStore)(ref);
}
