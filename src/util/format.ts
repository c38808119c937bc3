/** Output formats of backy 2.1 (spec 1.5): bytes, timestamps, durations. */

const UNITS = ["kiB", "MiB", "GiB", "TiB"];

/** `0 Bytes`, `1 Byte`, `2.44 kiB`, `511.99 kiB`, `1024.00 TiB`. */
export function formatBytes(n: number): string {
  if (Math.abs(n) < 1024) return `${n} ${n === 1 ? "Byte" : "Bytes"}`;
  let value = n;
  for (let i = 0; i < UNITS.length; i++) {
    value /= 1024;
    if (Math.abs(value) < 1024 || i === UNITS.length - 1) {
      return `${value.toFixed(2)} ${UNITS[i]}`;
    }
  }
  throw new Error("unreachable");
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** `YYYY-MM-DD HH:MM:SS` in UTC. */
export function formatDateTime(date: Date): string {
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}`;
}

/** `YYYY-MM-DD HH:MM:SS UTC` (status file, check output). */
export function formatTimestamp(date: Date): string {
  return `${formatDateTime(date)} UTC`;
}

/** Duration column: `845.0 s`; a missing duration (incomplete revision) is `0 s`. */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined) return "0 s";
  return `${(Math.round(seconds * 10) / 10).toFixed(1)} s`;
}
