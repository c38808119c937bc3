/** Plain ASCII box tables (`+---+`), PrettyTable style, as backy 2.1 printed them. */
import Table from "cli-table3";

export type Align = "left" | "right";

export interface Column {
  header: string;
  align?: Align;
}

const ASCII_CHARS = {
  "top": "-",
  "top-mid": "+",
  "top-left": "+",
  "top-right": "+",
  "bottom": "-",
  "bottom-mid": "+",
  "bottom-left": "+",
  "bottom-right": "+",
  "left": "|",
  "left-mid": "+",
  "mid": "-",
  "mid-mid": "+",
  "right": "|",
  "right-mid": "+",
  "middle": "|",
};

const BATCH = 100;

/** Display width of each column, read off a rendered table's top rule `+-----+---+`. */
function columnWidths(rendered: string): number[] {
  const rule = rendered.slice(0, rendered.indexOf("\n"));
  return rule.split("+").slice(1, -1).map((dashes) => dashes.length);
}

/**
 * Renders rows under a header. Only the header is separated by a rule (cli-table3 would
 * draw one between every row by default), matching the 2.1 output byte for byte.
 *
 * cli-table3 lays a table out in time quadratic in its rows (2,000 jobs: ~2 s), so large
 * tables are rendered in batches and stitched together. Padding a header cell forces its
 * column to the width of the widest batch (headers are ASCII, data cells stay untouched),
 * and cli-table3 itself measured the widths, so the result is the same table.
 */
export function renderTable(columns: Column[], rows: string[][]): string {
  return asciiTable(columns, rows) ?? renderWithCliTable(columns, rows);
}

/** The general path through cli-table3 (display widths of any Unicode), batched. */
export function renderWithCliTable(columns: Column[], rows: string[][]): string {
  if (rows.length <= BATCH) return renderBatch(columns, rows);
  const batches: string[][][] = [];
  for (let i = 0; i < rows.length; i += BATCH) batches.push(rows.slice(i, i + BATCH));
  const first = batches.map((batch) => renderBatch(columns, batch));
  const widths = columns.map((_, c) => Math.max(...first.map((t) => columnWidths(t)[c])));
  const padded = columns.map((col, c) => {
    const fill = " ".repeat(widths[c] - 2 - col.header.length);
    return { ...col, header: col.align === "right" ? fill + col.header : col.header + fill };
  });
  const out: string[] = [];
  for (let b = 0; b < batches.length; b++) {
    let text = first[b];
    if (columnWidths(text).some((w, c) => w !== widths[c])) text = renderBatch(padded, batches[b]);
    const lines = text.split("\n");
    // Keep the header of the first batch and the bottom rule of the last one.
    out.push(...lines.slice(b === 0 ? 0 : 3, b === batches.length - 1 ? lines.length : -1));
  }
  return out.join("\n");
}

/**
 * The same table for printable-ASCII cells, drawn directly in linear time (cli-table3
 * needs ~0.4 s for the 6,000 rows of a 2,000-job plan). Anything else (wide or combining
 * characters, an empty table) goes to cli-table3, which measures display widths.
 */
export function asciiTable(columns: Column[], rows: string[][]): string | undefined {
  if (rows.length === 0) return undefined;
  const printable = /^[\x20-\x7e]*$/;
  const widths = columns.map((c) => c.header.length);
  for (const row of rows) {
    for (let i = 0; i < columns.length; i++) {
      const cell = row[i] ?? "";
      if (!printable.test(cell)) return undefined;
      if (cell.length > widths[i]) widths[i] = cell.length;
    }
  }
  if (!columns.every((c) => printable.test(c.header))) return undefined;
  const rule = `+${widths.map((w) => "-".repeat(w + 2)).join("+")}+`;
  const line = (cells: string[]) =>
    `| ${
      columns.map((c, i) =>
        c.align === "right"
          ? (cells[i] ?? "").padStart(widths[i])
          : (cells[i] ?? "").padEnd(widths[i])
      ).join(" | ")
    } |`;
  return [rule, line(columns.map((c) => c.header)), rule, ...rows.map(line), rule].join("\n");
}

function renderBatch(columns: Column[], rows: string[][]): string {
  const table = new Table({
    // cli-table3 accepts cell objects in the head (its typings only admit strings).
    head: columns.map((c) => ({
      content: c.header,
      hAlign: c.align ?? "left",
    })) as unknown as string[],
    chars: ASCII_CHARS,
    style: { head: [], border: [], "padding-left": 1, "padding-right": 1, compact: true },
  });
  for (const row of rows) {
    table.push(row.map((cell, i) => ({ content: cell, hAlign: columns[i].align ?? "left" })));
  }
  return table.toString();
}
