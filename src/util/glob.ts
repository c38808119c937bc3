/**
 * Job name filters for the telnet shell and the HTTP API, which any local user can send: a
 * shell-style glob, or a plain substring. Hand-written because the npm glob matchers
 * (picomatch, minimatch) compile patterns to backtracking regular expressions, where
 * `*a*a*a*b` is polynomial of the pattern's degree; this matcher backtracks only to the last
 * `*` and so takes at most (name length x pattern length) steps (D18, issue 10).
 */

/** One pattern element. */
type Atom =
  | { kind: "star" }
  | { kind: "any" }
  | { kind: "char"; c: string }
  | { kind: "set"; negate: boolean; items: (string | [string, string])[] };

/** Patterns longer than this are refused: job names are at most 255 bytes anyway. */
export const MAX_PATTERN = 256;

/** Whether `pattern` uses glob syntax (else it is matched as a substring). */
export function isGlob(pattern: string): boolean {
  return /[*?[\\]/.test(pattern);
}

function compile(pattern: string): Atom[] {
  const chars = Array.from(pattern);
  const atoms: Atom[] = [];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i];
    if (c === "*") {
      if (atoms.at(-1)?.kind !== "star") atoms.push({ kind: "star" }); // ** is *
    } else if (c === "?") {
      atoms.push({ kind: "any" });
    } else if (c === "\\" && i + 1 < chars.length) {
      atoms.push({ kind: "char", c: chars[++i] });
    } else if (c === "[") {
      let j = i + 1;
      const negate = chars[j] === "!" || chars[j] === "^";
      if (negate) j++;
      const items: (string | [string, string])[] = [];
      let first = true;
      while (j < chars.length && (chars[j] !== "]" || first)) {
        first = false;
        const lo = chars[j];
        if (chars[j + 1] === "-" && j + 2 < chars.length && chars[j + 2] !== "]") {
          items.push([lo, chars[j + 2]]);
          j += 3;
        } else {
          items.push(lo);
          j++;
        }
      }
      if (j >= chars.length) atoms.push({ kind: "char", c }); // no closing ]: a literal [
      else {
        atoms.push({ kind: "set", negate, items });
        i = j;
      }
    } else {
      atoms.push({ kind: "char", c });
    }
  }
  return atoms;
}

function matchesOne(atom: Atom, c: string): boolean {
  switch (atom.kind) {
    case "any":
      return true;
    case "char":
      return atom.c === c;
    case "set": {
      const inSet = atom.items.some((it) =>
        typeof it === "string" ? it === c : it[0] <= c && c <= it[1]
      );
      return inSet !== atom.negate;
    }
    default:
      return false;
  }
}

/** Whether the whole of `name` matches the glob `pattern`. */
export function globMatch(pattern: string, name: string): boolean {
  return matchAtoms(compile(pattern), Array.from(name));
}

function matchAtoms(atoms: Atom[], s: string[]): boolean {
  let p = 0, i = 0;
  let starP = -1, starI = 0;
  while (i < s.length) {
    if (p < atoms.length && atoms[p].kind === "star") {
      starP = p++;
      starI = i;
    } else if (p < atoms.length && matchesOne(atoms[p], s[i])) {
      p++;
      i++;
    } else if (starP >= 0) {
      // Let the last star swallow one more character and retry after it.
      p = starP + 1;
      i = ++starI;
    } else {
      return false;
    }
  }
  while (p < atoms.length && atoms[p].kind === "star") p++;
  return p === atoms.length;
}

/**
 * A name filter: a glob when the pattern has `*`, `?`, `[` or `\`, otherwise names
 * containing it. Throws RangeError for overlong patterns.
 */
export function nameFilter(pattern: string): (name: string) => boolean {
  if (pattern.length > MAX_PATTERN) {
    throw new RangeError(`pattern too long (at most ${MAX_PATTERN} characters)`);
  }
  if (!isGlob(pattern)) return (name) => name.includes(pattern);
  const atoms = compile(pattern);
  return (name) => matchAtoms(atoms, Array.from(name));
}
