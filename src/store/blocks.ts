/** Opens the Worker-side block face of a store for a StoreRef (see block_store.ts). */
import type { BlockStore, StoreRef } from "./block_store.ts";
import { CowBlocks } from "./cow_blocks.ts";
import { ChunkedBlocks } from "./chunked_blocks.ts";

/**
 * The block face for `ref` (one instance per Worker and ref, kept while the Worker runs).
 * The s3 client is loaded only by Workers that need it (it costs every Worker memory).
 */
export async function openBlocks(ref: StoreRef): Promise<BlockStore> {
  switch (ref.backend) {
    case "cow":
      return new CowBlocks(ref.image);
    case "chunked":
      return new ChunkedBlocks(ref.chunks);
    case "s3": {
      const { S3Blocks } = await import("./s3_blocks.ts");
      return new S3Blocks(ref);
    }
  }
}
