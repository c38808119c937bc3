/** Block content tests shared by the data path: all-zero detection and SHA-256. */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";

/** Compared piece by piece: a 64 KiB zero buffer instead of a resident 4 MiB one per thread. */
const ZERO_PIECE = 64 * 1024;
const zeroPiece = Buffer.alloc(ZERO_PIECE);

/** memcmp against zeros (native; a JS loop over the words is several times slower). */
export function isZero(data: Uint8Array): boolean {
  // Random data differs in the first bytes: answer without touching the rest.
  if (data.length > 0 && (data[0] !== 0 || data[data.length - 1] !== 0)) return false;
  const view = Buffer.from(data.buffer, data.byteOffset, data.length);
  for (let at = 0; at < data.length; at += ZERO_PIECE) {
    const n = Math.min(ZERO_PIECE, data.length - at);
    if (!view.subarray(at, at + n).equals(zeroPiece.subarray(0, n))) return false;
  }
  return true;
}

/** SHA-256 of `data` (node:crypto runs at OpenSSL speed, design D3). */
export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}
