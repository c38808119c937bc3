/**
 * The layer check (`deno task check`): fails on import cycles and on imports that run
 * against the architecture's layers (design.md, "Layout"). Each folder under src/ has a
 * rank; a module may import from its own folder and from folders of a lower rank only
 * (folders of equal rank stay independent of each other). Cycles count value imports
 * (`import type` is erased at run time); layers count every import, dynamic ones
 * (`import("./x.ts")`) and Worker entries (`new Worker(new URL("./w.ts", import.meta.url))`)
 * included.
 *
 *   deno run --allow-read tools/check_layers.ts [ROOT]
 */
import { join, relative } from "node:path";

/** Lower ranks are more basic; mod.ts sits on top. */
export const RANKS: Record<string, number> = {
  util: 0,
  config: 1,
  repo: 2,
  store: 3,
  sources: 3,
  backup: 4,
  // What the daemon reports and its port to the front ends (pure models).
  status: 4,
  // Front ends of the daemon, through the port in status/.
  shell: 5,
  http: 5,
  // `backy mount`: revisions as a FUSE filesystem, read through backup/'s Workers.
  mount: 5,
  scheduler: 6,
  cli: 7,
};

export interface Edge {
  from: string;
  to: string;
  typeOnly: boolean;
}

const IMPORT_RE =
  /(?:^|\n)\s*(?:import|export)\s+(type\s+)?(?:[^"'`;]*?\s+from\s+)?["'](\.{1,2}\/[^"']+)["']/g;
const DYNAMIC_RE = /\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;
const URL_RE =
  /new Worker\(\s*new URL\(\s*["'](\.{1,2}\/[^"']+\.ts)["']\s*,\s*import\.meta\.url\s*\)/g;

/** The relative imports of one module's source text (specifiers as written). */
export function importsOf(text: string): { spec: string; typeOnly: boolean }[] {
  const out: { spec: string; typeOnly: boolean }[] = [];
  for (const m of text.matchAll(IMPORT_RE)) out.push({ spec: m[2], typeOnly: !!m[1] });
  for (const m of text.matchAll(DYNAMIC_RE)) out.push({ spec: m[1], typeOnly: false });
  for (const m of text.matchAll(URL_RE)) out.push({ spec: m[1], typeOnly: false });
  return out;
}

/** The layer a module (path relative to the root) belongs to, or undefined for unknown folders. */
export function rankOf(path: string): number | undefined {
  if (path === "mod.ts") return 100;
  const m = /^src\/([^/]+)\//.exec(path);
  return m ? RANKS[m[1]] : undefined;
}

function folderOf(path: string): string {
  return path === "mod.ts" ? "" : path.split("/").slice(0, 2).join("/");
}

/** Problems with the import graph: unknown folders, upward or sideways imports, cycles. */
export function problems(edges: Edge[], modules: string[]): string[] {
  const out: string[] = [];
  for (const m of modules) {
    if (rankOf(m) === undefined) out.push(`${m}: folder has no layer (add it to RANKS)`);
  }
  for (const e of edges) {
    const a = rankOf(e.from), b = rankOf(e.to);
    if (a === undefined || b === undefined || folderOf(e.from) === folderOf(e.to)) continue;
    if (b >= a) {
      out.push(
        `${e.from} imports ${e.to}: ${folderOf(e.to)} is not below ${folderOf(e.from)}`,
      );
    }
  }
  for (const cycle of cycles(edges.filter((e) => !e.typeOnly))) {
    out.push(`import cycle: ${[...cycle, cycle[0]].join(" -> ")}`);
  }
  return out;
}

/** Strongly connected components with more than one module (Tarjan), or self-imports. */
export function cycles(edges: Edge[]): string[][] {
  const graph = new Map<string, string[]>();
  for (const e of edges) {
    if (!graph.has(e.from)) graph.set(e.from, []);
    graph.get(e.from)!.push(e.to);
  }
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.reverse());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* tsFiles(p);
    else if (e.isFile && e.name.endsWith(".ts")) yield p;
  }
}

if (import.meta.main) {
  const root = Deno.args[0] ?? new URL("..", import.meta.url).pathname;
  const files = [join(root, "mod.ts")];
  for await (const f of tsFiles(join(root, "src"))) files.push(f);
  const modules = files.map((f) => relative(root, f)).sort();
  const edges: Edge[] = [];
  for (const file of files) {
    const from = relative(root, file);
    for (const { spec, typeOnly } of importsOf(await Deno.readTextFile(file))) {
      edges.push({ from, to: relative(root, join(file, "..", spec)), typeOnly });
    }
  }
  const found = problems(edges, modules);
  for (const p of found) console.error(`layers: ${p}`);
  if (found.length) Deno.exit(1);
  console.log(`layers: ${modules.length} modules, ${edges.length} imports, no cycle, none upward`);
}
