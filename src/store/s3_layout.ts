/**
 * Object names of the s3 store (docs/s3.md): content-addressed chunks shared by every job
 * and host, each job's metadata under its name, leases, and the garbage collector's state.
 * Pure: names and the small encodings only.
 */
import { hex } from "../repo/index_file.ts";

/** `chunks/<2 hex>/<64 hex>`: the chunk file format of the chunked store. */
export function chunkKey(digest: Uint8Array | string): string {
  const h = typeof digest === "string" ? digest : hex(digest);
  return `chunks/${h.slice(0, 2)}/${h}`;
}

/** The digest (hex) a chunk key names, or undefined for anything else. */
export function chunkOfKey(key: string): string | undefined {
  const m = /^chunks\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key);
  return m && m[2].startsWith(m[1]) ? m[2] : undefined;
}

export const JOBS = "jobs/";
export const LEASES = "leases/";
export const GC_LEASE = "gc/lease";
export const GC_STATE = "gc/state";
export const GC_LAST = "gc/last";

/** Prefix of one job's metadata. */
export function jobPrefix(job: string): string {
  return `${JOBS}${job}/`;
}
export function revKey(job: string, id: string): string {
  return `${jobPrefix(job)}${id}.rev`;
}
export function indexKey(job: string, id: string): string {
  return `${jobPrefix(job)}${id}.index`;
}
export function configKey(job: string): string {
  return `${jobPrefix(job)}config`;
}
export function leaseKey(job: string): string {
  return `${LEASES}${job}`;
}
export function condemnedKey(gc: string): string {
  return `gc/${gc}/condemned`;
}
export function keepPrefix(gc: string): string {
  return `gc/${gc}/keep/`;
}
export function keepKey(gc: string, digestHex: string): string {
  return `${keepPrefix(gc)}${digestHex}`;
}
export function quarantineKey(digestHex: string, at: number): string {
  return `quarantine/${digestHex}.${at}`;
}

/** What a key under `jobs/` is: a revision's .rev or .index, the config, or other. */
export function jobFileOfKey(
  key: string,
): { job: string; id: string; kind: "rev" | "index" } | undefined {
  const m = /^jobs\/([^/]+)\/([^/]+)\.(rev|index)$/.exec(key);
  return m ? { job: m[1], id: m[2], kind: m[3] as "rev" | "index" } : undefined;
}

/** Hex digests as one binary list (32 bytes each), for the condemned list. */
export function encodeDigests(hexes: Iterable<string>): Uint8Array {
  const list = [...hexes];
  const out = new Uint8Array(list.length * 32);
  list.forEach((h, i) => {
    for (let k = 0; k < 32; k++) out[i * 32 + k] = parseInt(h.slice(2 * k, 2 * k + 2), 16);
  });
  return out;
}

export function decodeDigests(bytes: Uint8Array): Set<string> {
  if (bytes.length % 32 !== 0) throw new Error("digest list length is not a multiple of 32");
  const out = new Set<string>();
  for (let i = 0; i < bytes.length; i += 32) out.add(hex(bytes.subarray(i, i + 32)));
  return out;
}

/** The collector's progress between its steps (`gc/state`), see docs/s3.md. */
export interface GcState {
  id: string;
  /** condemned: the list is out, writers protect what they reuse; deleting: sweeping now. */
  phase: "condemned" | "deleting";
  /** Server time (ms) the list was published. */
  created: number;
  /** Leases live when the list was published: the sweep waits until each has ended. */
  waitFor: { job: string; lease: string }[];
  /** How many chunks the list holds. */
  condemned: number;
  host: string;
}

/** Parses `gc/state`; malformed is an error (a sweep must never guess). */
export function parseGcState(bytes: Uint8Array): GcState {
  const v = JSON.parse(new TextDecoder().decode(bytes));
  if (
    typeof v?.id !== "string" || (v.phase !== "condemned" && v.phase !== "deleting") ||
    !Array.isArray(v.waitFor)
  ) {
    throw new Error("malformed gc/state");
  }
  return v as GcState;
}

/** A lease object (`leases/<job>`, `gc/lease`): who holds it and until when (server ms). */
export interface Lease {
  /** Random per acquisition; renewals keep it. */
  id: string;
  host: string;
  pid: number;
  op: string;
  started: number;
  expires: number;
}

export function parseLease(bytes: Uint8Array): Lease {
  const v = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof v?.id !== "string" || typeof v.expires !== "number") {
    throw new Error("malformed lease object");
  }
  return v as Lease;
}

/**
 * Whether a lease still holds at server time `now`. A margin of 5 s covers the Date
 * header's one-second resolution and the time between a holder's check and its action.
 */
export function isLive(lease: Lease, now: number): boolean {
  return now < lease.expires + 5000;
}
