/**
 * Readers for what monitoring systems read, written from the formats' own documents: plugin
 * output per the monitoring-plugins guidelines (first line, long text, perfdata after `|`,
 * also on later lines) and the Prometheus text exposition format. Where the real tools are
 * installed (Perl's Monitoring::Plugin, promtool), `realPerfParse` / `promtoolCheck` run
 * them too.
 */

/** One perfdata item: `'label'=value[UOM];[warn];[crit];[min];[max]`. */
export interface PerfItem {
  label: string;
  value: number;
  uom: string;
  warn?: string;
  crit?: string;
  min?: string;
  max?: string;
}

export interface PluginOutput {
  /** Text of the first line before `|`. */
  summary: string;
  /** Long text lines (before the `|` that starts the remaining perfdata). */
  long: string[];
  perf: PerfItem[];
}

const ITEM =
  /^('(?:[^']|'')+'|[^'=\s]+)=(-?[\d.]+)([a-zA-Z%]*)(?:;([^;\s]*))?(?:;([^;\s]*))?(?:;([^;\s]*))?(?:;([^;\s]*))?$/;

/** Splits a perfdata string into items; throws on anything malformed. */
export function parsePerf(text: string): PerfItem[] {
  const out: PerfItem[] = [];
  // Labels may be quoted and contain spaces: split on whitespace outside quotes.
  const tokens = text.match(/(?:'(?:[^']|'')*'|[^\s'])+/g) ?? [];
  for (const tok of tokens) {
    const m = ITEM.exec(tok);
    if (!m) throw new Error(`malformed perfdata item ${JSON.stringify(tok)}`);
    const label = m[1].startsWith("'") ? m[1].slice(1, -1).replaceAll("''", "'") : m[1];
    const item: PerfItem = { label, value: Number(m[2]), uom: m[3] };
    if (m[4]) item.warn = m[4];
    if (m[5]) item.crit = m[5];
    if (m[6]) item.min = m[6];
    if (m[7]) item.max = m[7];
    out.push(item);
  }
  return out;
}

/** Reads plugin output as Nagios does. */
export function parsePluginOutput(text: string): PluginOutput {
  const lines = text.replace(/\n$/, "").split("\n");
  const [first, ...rest] = lines;
  const bar = first.indexOf("|");
  const summary = (bar < 0 ? first : first.slice(0, bar)).trimEnd();
  let perfText = bar < 0 ? "" : first.slice(bar + 1);
  const long: string[] = [];
  let inPerf = false;
  for (const line of rest) {
    if (inPerf) {
      perfText += ` ${line}`;
      continue;
    }
    const i = line.indexOf("|");
    if (i < 0) long.push(line);
    else {
      if (line.slice(0, i).trim() !== "") long.push(line.slice(0, i).trimEnd());
      perfText += ` ${line.slice(i + 1)}`;
      inPerf = true;
    }
  }
  return { summary, long, perf: parsePerf(perfText.trim()) };
}

function which(program: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${program}`).isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** Whether Perl's Monitoring::Plugin (Debian: libmonitoring-plugin-perl) is installed. */
export async function havePerlPlugin(): Promise<boolean> {
  if (!which("perl")) return false;
  const r = await new Deno.Command("perl", {
    args: ["-MMonitoring::Plugin::Performance", "-e", "1"],
    stdout: "null",
    stderr: "null",
  }).output();
  return r.success;
}

/** `Monitoring::Plugin::Performance->parse_perfstring`: label, value, uom, warn, crit, min. */
export async function realPerfParse(perf: string): Promise<string[][]> {
  const script = `use Monitoring::Plugin::Performance;
my @p = Monitoring::Plugin::Performance->parse_perfstring($ARGV[0]) or die "unparsable\\n";
for (@p) { print join("\\t", $_->label, $_->value, $_->uom // "",
  $_->threshold->warning->is_set ? $_->threshold->warning : "",
  $_->threshold->critical->is_set ? $_->threshold->critical : "", $_->min // ""), "\\n" }`;
  const r = await new Deno.Command("perl", {
    args: ["-e", script, perf],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  if (!r.success) throw new Error(`perl: ${dec.decode(r.stderr)}`);
  return dec.decode(r.stdout).trimEnd().split("\n").map((l) => l.split("\t"));
}

/** Whether promtool (Debian: prometheus) is installed. */
export function havePromtool(): boolean {
  return which("promtool");
}

/** `promtool check metrics` on the text: its exit code and complaints. */
export async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const r = await child.output();
  const dec = new TextDecoder();
  return { code: r.code, output: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

/** Samples of the exposition format: `name{label="v"} value` -> value (HELP/TYPE checked). */
export function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") typed.add(meta[2]);
      continue;
    }
    const m =
      /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$/
        .exec(line);
    if (!m) throw new Error(`malformed sample line ${JSON.stringify(line)}`);
    if (!typed.has(m[1])) throw new Error(`sample before its TYPE: ${line}`);
    const value = Number(m[3]);
    if (Number.isNaN(value) && m[3] !== "NaN") throw new Error(`bad value in ${line}`);
    out.set(`${m[1]}${m[2] ?? ""}`, value);
  }
  return out;
}
