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

/**
 * Renders rows under a header. Only the header is separated by a rule (cli-table3 would
 * draw one between every row by default), matching the 2.1 output byte for byte.
 */
export function renderTable(columns: Column[], rows: string[][]): string {
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
