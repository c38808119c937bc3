/** Block content tests shared by the data path: all-zero detection and SHA-256. */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";

const ZERO_SIZE = 4 * 1024 * 1024;
let zeroBuf = Buffer.alloc(ZERO_SIZE);

/** memcmp against a zero block (native; a JS loop over the words is several times slower). */
export function isZero(data: Uint8Array): boolean {
  // Random data differs in the first bytes: answer without touching the rest.
  if (data.length > 0 && (data[0] !== 0 || data[data.length - 1] !== 0)) return false;
  if (data.length > zeroBuf.length) zeroBuf = Buffer.alloc(data.length);
  const view = Buffer.from(data.buffer, data.byteOffset, data.length);
  return view.equals(zeroBuf.subarray(0, data.length));
}

/** SHA-256 of `data` (node:crypto runs at OpenSSL speed, design D3). */
export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}
