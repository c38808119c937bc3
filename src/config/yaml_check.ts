/**
 * Walking a parsed YAML document with errors that say `file:line: key.path: problem`.
 * Shared by the scheduler config and the per-job config (both validate sources).
 */
import { Document, isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit } from "yaml";
import { ConfigError } from "../util/errors.ts";

/** A value under validation: its YAML node (or null), its key path and the line to blame. */
export interface Located {
  node: unknown;
  path: string;
  line: number | undefined;
}

/** One key of a mapping; `line` is the key's own line. */
export interface Entry extends Located {
  name: string;
}

/** Parse YAML text; syntax errors become ConfigError at their line. */
export function parseYaml(text: string, file: string): { root: Located; check: YamlChecker } {
  const lineCounter = new LineCounter();
  // Duplicate keys are detected while walking (YamlChecker.entries) so the message can name
  // the key path; the library's own check would only say "Map keys must be unique".
  const doc = parseDocument(text, { lineCounter, uniqueKeys: false, prettyErrors: true });
  const error = doc.errors[0];
  if (error) {
    // prettyErrors appends " at line L, column C:" and a source excerpt; we print the line
    // in the file:line prefix instead.
    const message = error.code === "MULTIPLE_DOCS"
      ? "the file must contain a single YAML document"
      : error.message.replace(/ at line \d+, column \d+:[\s\S]*$/, "");
    throw new ConfigError(file, error.linePos?.[0].line, `invalid YAML: ${message}`);
  }
  const check = new YamlChecker(file, doc, lineCounter);
  // The parser accepts `*name` without a matching `&name`; catch it here, at the alias.
  visit(doc, {
    Alias(_, alias) {
      if (alias.resolve(doc) === undefined) {
        throw new ConfigError(
          file,
          check.lineOf(alias),
          `invalid YAML: alias *${alias.source} has no matching anchor &${alias.source}`,
        );
      }
    },
  });
  return { root: { node: doc.contents, path: "", line: check.lineOf(doc.contents) ?? 1 }, check };
}

/** Validation helpers bound to one document. Every failure throws a single ConfigError. */
export class YamlChecker {
  constructor(
    readonly file: string,
    private readonly doc: Document,
    private readonly lineCounter?: LineCounter,
    /** Used for nodes without a source position (values built from JS objects). */
    private readonly fallbackLine?: number,
  ) {}

  /** A checker for a plain JS value (e.g. an already parsed job config), blamed on `line`. */
  static forValue(
    value: unknown,
    file: string,
    line?: number,
  ): { root: unknown; check: YamlChecker } {
    const doc = new Document(value);
    return { root: doc.contents, check: new YamlChecker(file, doc, undefined, line) };
  }

  lineOf(node: unknown): number | undefined {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    if (range && this.lineCounter) return this.lineCounter.linePos(range[0]).line;
    return this.fallbackLine;
  }

  fail(at: { path: string; line: number | undefined }, detail: string): never {
    throw new ConfigError(this.file, at.line, `${at.path || "top level"}: ${detail}`);
  }

  /** Follow `*alias` to its anchored node so aliased sections validate like inline ones. */
  resolve(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.doc) : node;
  }

  /** The keys of a mapping in document order. `allowEmpty`: an empty value counts as {}. */
  entries(at: Located, opts: { allowEmpty?: boolean; what?: string } = {}): Entry[] {
    const node = this.resolve(at.node);
    if (opts.allowEmpty && isNull(node)) return [];
    if (!isMap(node)) this.fail(at, `expected ${opts.what ?? "a mapping"}, got ${describe(node)}`);
    const seen = new Map<string, number | undefined>();
    const out: Entry[] = [];
    for (const pair of node.items) {
      const key = this.resolve(pair.key);
      if (!isScalar(key)) {
        this.fail(
          { path: at.path, line: this.lineOf(pair.key) ?? at.line },
          `keys must be plain names, got ${describe(key)}`,
        );
      }
      const name = keyName(key);
      const entry: Entry = {
        name,
        node: pair.value,
        path: joinPath(at.path, name),
        line: this.lineOf(key) ?? at.line,
      };
      if (seen.has(name)) {
        const first = seen.get(name);
        this.fail(
          entry,
          `duplicate key${first !== undefined ? ` (first defined at line ${first})` : ""}`,
        );
      }
      seen.set(name, entry.line);
      out.push(entry);
    }
    return out;
  }

  /** A mapping with a fixed set of keys: unknown keys are errors. */
  fields(
    at: Located,
    allowed: readonly string[],
    opts: { allowEmpty?: boolean; what?: string } = {},
  ): Map<string, Entry> {
    const result = new Map<string, Entry>();
    for (const entry of this.entries(at, opts)) {
      if (!allowed.includes(entry.name)) {
        this.fail(entry, `unknown key (expected ${listOf(allowed)})`);
      }
      result.set(entry.name, entry);
    }
    return result;
  }

  /** The entry for a required key; a missing key is blamed on the line of its parent key. */
  require(fields: Map<string, Entry>, name: string, parent: Located): Entry {
    const entry = fields.get(name);
    if (!entry) {
      this.fail({ path: joinPath(parent.path, name), line: parent.line }, "required key missing");
    }
    return entry;
  }

  /** The scalar value (string, number, boolean, null) or undefined for lists and mappings. */
  scalar(at: Located): unknown {
    const node = this.resolve(at.node);
    if (isNull(node)) return null;
    return isScalar(node) ? node.value : undefined;
  }

  string(at: Located, opts: { nonEmpty?: boolean } = {}): string {
    const value = this.scalar(at);
    if (typeof value !== "string") {
      this.fail(at, `expected a string, got ${describe(this.resolve(at.node))}`);
    }
    if (opts.nonEmpty && value === "") this.fail(at, "must not be empty");
    return value;
  }

  /** An integer within [min, max]. */
  integer(at: Located, min = -Infinity, max = Infinity): number {
    const value = this.scalar(at);
    const ok = typeof value === "number" && Number.isSafeInteger(value) && value >= min &&
      value <= max;
    if (!ok) {
      const wanted = min === 1 && max === Infinity
        ? "a positive integer"
        : max === Infinity
        ? `an integer >= ${min}`
        : `an integer from ${min} to ${max}`;
      this.fail(at, `expected ${wanted}, got ${describe(this.resolve(at.node))}`);
    }
    return value;
  }

  boolean(at: Located): boolean {
    const value = this.scalar(at);
    if (typeof value !== "boolean") {
      this.fail(at, `expected true or false, got ${describe(this.resolve(at.node))}`);
    }
    return value;
  }

  /** A list, or undefined when the value is not one. */
  list(at: Located): Located[] | undefined {
    const node = this.resolve(at.node);
    if (!isSeq(node)) return undefined;
    return node.items.map((item, i) => ({
      node: item,
      path: `${at.path}[${i}]`,
      line: this.lineOf(item) ?? at.line,
    }));
  }

  /** Human description of a node for "expected X, got Y". */
  describe(at: Located): string {
    return describe(this.resolve(at.node));
  }
}

function isNull(node: unknown): boolean {
  return node === null || node === undefined || (isScalar(node) && node.value === null);
}

/**
 * The key as written: plain keys that YAML would read as numbers or booleans (`01:`, `true:`)
 * keep their source text, so a job called `01` is the directory `01`, not `1`.
 */
function keyName(key: { value: unknown; source?: string }): string {
  if (typeof key.value === "string") return key.value;
  if (typeof key.source === "string") return key.source;
  return key.value === null || key.value === undefined ? "" : String(key.value);
}

/** `jobs.test01.source`; names that are not simple identifiers are quoted, so `jobs."../x"`. */
export function joinPath(parent: string, name: string): string {
  const segment = /^[A-Za-z0-9_][A-Za-z0-9_-]*$/.test(name) ? name : JSON.stringify(name);
  return parent ? `${parent}.${segment}` : segment;
}

/** `a, b or c` */
export function listOf(items: readonly string[]): string {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} or ${items[items.length - 1]}`;
}

/** Quote user text for a message, shortened so a huge value does not flood the log. */
export function quote(text: string): string {
  const short = text.length > 60 ? `${text.slice(0, 57)}...` : text;
  return JSON.stringify(short);
}

function describe(node: unknown): string {
  if (isNull(node)) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) {
    const v = node.value;
    if (typeof v === "string") return `string ${quote(v)}`;
    if (typeof v === "boolean") return `boolean ${v}`;
    if (typeof v === "bigint") return `integer ${v}`;
    if (typeof v === "number") return Number.isInteger(v) ? `integer ${v}` : `number ${v}`;
  }
  return "an unsupported value";
}
