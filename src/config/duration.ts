/**
 * Interval syntax of backy 2.1 (spec 4.2): an integer followed by an optional unit
 * w/d/h/m/s; no unit means seconds. Returns whole seconds, or undefined when invalid.
 */
const UNITS: Record<string, number> = { w: 604800, d: 86400, h: 3600, m: 60, s: 1 };

export function parseDuration(text: string | number): number | undefined {
  if (typeof text === "number") {
    return Number.isSafeInteger(text) && text > 0 ? text : undefined;
  }
  const m = /^\s*(\d+)\s*([wdhms]?)\s*$/.exec(text);
  if (!m) return undefined;
  const value = Number(m[1]) * (m[2] ? UNITS[m[2]] : 1);
  return value > 0 && Number.isSafeInteger(value) ? value : undefined;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

/** A byte count like `500M`, `20G` or `1048576` (binary units, optional trailing `B`). */
export function parseSize(text: string | number): number | undefined {
  if (typeof text === "number") return Number.isSafeInteger(text) && text > 0 ? text : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const value = Math.round(Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()]);
  return value > 0 && Number.isSafeInteger(value) ? value : undefined;
}
