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
