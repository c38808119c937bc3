/** Revision IDs: a random UUID4 in base 57 (shortuuid alphabet), 22 characters (spec 2.4). */
const ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

export function newRevisionId(): string {
  const hex = crypto.randomUUID().replaceAll("-", "");
  let n = BigInt("0x" + hex);
  let out = "";
  while (n > 0n) {
    out = ALPHABET[Number(n % 57n)] + out;
    n /= 57n;
  }
  return out.padStart(22, ALPHABET[0]);
}

/** IDs are opaque, but they name files: nothing that could leave the job directory. */
export function isSafeId(id: string): boolean {
  return id.length > 0 && !id.includes("/") && !id.startsWith(".") &&
    ![...id].some((c) => c.charCodeAt(0) < 0x20);
}
