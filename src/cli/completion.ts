/**
 * `backy completion bash|zsh`: shell completion scripts generated from the command tree
 * itself, so they list exactly the commands and options the program has.
 *
 * Hand-written rather than a library: the completion libraries for commander
 * (@bomb.sh/tab, tabtab, omelette) run the program at every TAB press (~0.1-0.2 s of Deno
 * start-up each, with backy's permissions), carapace needs its own binary, and
 * @bomb.sh/tab is pre-1.0. backy's grammar is small and static, so a static script does it.
 */
import type { CommandUnknownOpts } from "@commander-js/extra-typings";

/** Shells we write scripts for. */
export const SHELLS = ["bash", "zsh"] as const;
export type Shell = typeof SHELLS[number];

/** What the value of an option or argument completes to. */
type Hint = "file" | "dir" | "none" | readonly string[];

/** Values by option long name or argument name (everything else: nothing to suggest). */
const HINTS: Readonly<Record<string, Hint>> = {
  "--logfile": "file",
  "--backupdir": "dir",
  "--config": "file",
  "--backend": ["cow", "chunked"],
  "--revision": ["last", "latest"],
  type: ["file", "ceph-rbd", "flyingcircus"],
  source: "file",
  target: "file",
  shell: SHELLS,
};

interface OptionSpec {
  short?: string;
  long?: string;
  takesValue: boolean;
  description: string;
  hint: Hint;
}

interface ArgSpec {
  name: string;
  variadic: boolean;
  hint: Hint;
}

interface CommandSpec {
  name: string;
  description: string;
  options: OptionSpec[];
  args: ArgSpec[];
}

function optionsOf(cmd: CommandUnknownOpts): OptionSpec[] {
  return cmd.createHelp().visibleOptions(cmd).map((o) => ({
    short: o.short,
    long: o.long,
    takesValue: o.required || o.optional,
    description: o.description,
    hint: (o.long && HINTS[o.long]) || "none",
  }));
}

/** The command tree as plain data (also what the tests compare against). */
export function commandSpecs(
  program: CommandUnknownOpts,
): { globals: OptionSpec[]; commands: CommandSpec[] } {
  const names = program.createHelp().visibleCommands(program).map((c) => c.name());
  const commands = program.createHelp().visibleCommands(program).map((c) => ({
    name: c.name(),
    description: c.description(),
    options: optionsOf(c),
    args: c.registeredArguments.map((a) => ({
      name: a.name(),
      variadic: a.variadic,
      hint: c.name() === "help" ? names : HINTS[a.name()] ?? "none",
    })),
  }));
  return { globals: optionsOf(program), commands };
}

function flags(o: OptionSpec): string[] {
  return [o.short, o.long].filter((f): f is string => f !== undefined);
}

// ---------------------------------------------------------------------------------------
// bash

function bashReply(hint: Hint): string {
  if (hint === "file") {
    return `compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))`;
  }
  if (hint === "dir") {
    return `compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur"))`;
  }
  if (hint === "none") return "COMPREPLY=()";
  return `COMPREPLY=($(compgen -W "${hint.join(" ")}" -- "$cur"))`;
}

function bashScript(program: CommandUnknownOpts): string {
  const { globals, commands } = commandSpecs(program);
  const valueFlags = (opts: OptionSpec[]) => opts.filter((o) => o.takesValue).flatMap(flags);
  const globalValue = valueFlags(globals);
  const lines: string[] = [
    `# bash completion for backy ${program.version() ?? ""}, made by \`backy completion bash\`.`,
    "# Load it with: source <(backy completion bash)",
    "# or install it: backy completion bash > /etc/bash_completion.d/backy",
    "_backy() {",
    "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
    '  local i=1 cmd="" npos=0 w',
    "  # Global options (and their values) come first, then the command and its words.",
    '  while [ "$i" -lt "$COMP_CWORD" ]; do',
    "    w=${COMP_WORDS[i]}",
    '    if [ -z "$cmd" ]; then',
    "      case $w in",
  ];
  if (globalValue.length) lines.push(`        ${globalValue.join("|")}) i=$((i + 1)) ;;`);
  lines.push(
    "        -*) ;;",
    "        *) cmd=$w ;;",
    "      esac",
    "    else",
    '      case "$cmd $w" in',
  );
  for (const c of commands) {
    const vf = valueFlags(c.options);
    if (vf.length) {
      lines.push(`        ${vf.map((f) => `"${c.name} ${f}"`).join("|")}) i=$((i + 1)) ;;`);
    }
  }
  lines.push(
    '        *" -"*) ;;',
    "        *) npos=$((npos + 1)) ;;",
    "      esac",
    "    fi",
    "    i=$((i + 1))",
    "  done",
    "  # The value of an option.",
    '  case "$cmd $prev" in',
  );
  for (const o of globals.filter((o) => o.takesValue)) {
    lines.push(`    ${flags(o).map((f) => `" ${f}"`).join("|")}) ${bashReply(o.hint)}; return ;;`);
  }
  for (const c of commands) {
    for (const o of c.options.filter((o) => o.takesValue)) {
      lines.push(
        `    ${flags(o).map((f) => `"${c.name} ${f}"`).join("|")}) ${bashReply(o.hint)}; return ;;`,
      );
    }
  }
  lines.push(
    "  esac",
    '  if [ -z "$cmd" ]; then',
    "    case $cur in",
    `      -*) ${bashReply(globals.flatMap(flags))} ;;`,
    `      *) ${bashReply(commands.map((c) => c.name))} ;;`,
    "    esac",
    "    return",
    "  fi",
    '  case "$cur" in',
    "    -*)",
    "      case $cmd in",
  );
  for (const c of commands) {
    lines.push(`        ${c.name}) ${bashReply(c.options.flatMap(flags))} ;;`);
  }
  lines.push(
    "        *) COMPREPLY=() ;;",
    "      esac",
    "      return ;;",
    "  esac",
    "  # The command's arguments, by position.",
    '  case "$cmd" in',
  );
  for (const c of commands.filter((c) => c.args.length)) {
    lines.push(`    ${c.name})`, '      case "$npos" in');
    c.args.forEach((a, i) => {
      const last = i === c.args.length - 1;
      lines.push(`        ${last && a.variadic ? "*" : i}) ${bashReply(a.hint)} ;;`);
    });
    lines.push("        *) COMPREPLY=() ;;", "      esac ;;");
  }
  lines.push(
    "    *) COMPREPLY=() ;;",
    "  esac",
    "}",
    "complete -F _backy backy",
    "",
  );
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------
// zsh

/** Text inside a single-quoted zsh `_arguments` spec: brackets and colons escaped. */
function zq(text: string): string {
  return text.replace(/([\[\]:\\])/g, "\\$1").replaceAll("'", `'\\''`);
}

function zshAction(hint: Hint): string {
  if (hint === "file") return "_files";
  if (hint === "dir") return "_files -/";
  if (hint === "none") return " ";
  return `(${hint.join(" ")})`;
}

function zshOption(o: OptionSpec): string {
  const fs = flags(o);
  const desc = `[${zq(o.description)}]`;
  const value = o.takesValue ? `:${zq(o.long?.slice(2) ?? "value")}:${zshAction(o.hint)}` : "";
  const suffix = (f: string) => (o.takesValue ? (f.startsWith("--") ? "=" : "+") : "");
  if (fs.length === 1) return `'${fs[0]}${suffix(fs[0])}${desc}${value}'`;
  const exclusive = `(${fs.join(" ")})`;
  return `'${exclusive}'{${fs.map((f) => f + suffix(f)).join(",")}}'${desc}${value}'`;
}

function zshScript(program: CommandUnknownOpts): string {
  const { globals, commands } = commandSpecs(program);
  const lines: string[] = [
    "#compdef backy",
    `# zsh completion for backy ${program.version() ?? ""}, made by \`backy completion zsh\`.`,
    "# Load it with: source <(backy completion zsh)   (after compinit)",
    "# or install it as _backy in a directory on $fpath.",
    "_backy() {",
    "  local curcontext=$curcontext state line",
    "  typeset -A opt_args",
    "  _arguments -C \\",
    ...globals.map((o) => `    ${zshOption(o)} \\`),
    "    '1:command:->command' \\",
    "    '*::argument:->argument'",
    "  case $state in",
    "    command)",
    "      local -a commands",
    "      commands=(",
    ...commands.map((c) => `        '${c.name}:${c.description.replaceAll("'", `'\\''`)}'`),
    "      )",
    "      _describe -t commands 'backy command' commands ;;",
    "    argument)",
    "      curcontext=${curcontext%:*:*}:backy-$words[1]:",
    "      case $words[1] in",
  ];
  for (const c of commands) {
    const specs = [
      ...c.options.map(zshOption),
      ...c.args.map((a, i) =>
        `'${a.variadic ? "*" : i + 1}:${zq(a.name)}:${zshAction(a.hint).replaceAll("'", "")}'`
      ),
    ];
    lines.push(`        ${c.name}) _arguments ${specs.join(" ")} ;;`);
  }
  lines.push(
    "      esac ;;",
    "  esac",
    "}",
    'if [ "$funcstack[1]" = "_backy" ]; then',
    '  _backy "$@"',
    "else",
    "  compdef _backy backy",
    "fi",
    "",
  );
  return lines.join("\n");
}

/** The completion script for `shell`, from `program`'s commands and options. */
export function completionScript(program: CommandUnknownOpts, shell: Shell): string {
  return shell === "bash" ? bashScript(program) : zshScript(program);
}
