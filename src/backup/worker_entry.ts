/**
 * Starts data-path Workers (worker.ts) from wherever backy runs (util/entry.ts explains
 * the marker name): the Worker loads this module's URL, which in a checkout is this file
 * and in the bundle the bundle itself; either way the line below then runs worker.ts.
 * The artifact starts them from the Worker's own bundle that it carries instead.
 */
import { embeddedWorkerBundle, inDataWorker, WORKER_NAME } from "../util/entry.ts";

// The data-path Worker's module: the one place that names it. A literal specifier, so that
// the bundler follows it; awaited, so the Worker's message handler exists before the first
// message is dispatched.
if (inDataWorker()) await import("./worker.ts");

let bundleUrl: string | undefined;

/** Starts one data-path Worker (worker.ts). */
export function newDataWorker(): Worker {
  const code = embeddedWorkerBundle();
  // A Worker of the whole artifact parses all of it and costs 2-4 MiB more (docs/benchmarks.md).
  if (code !== undefined) {
    bundleUrl ??= URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  }
  return new Worker(bundleUrl ?? import.meta.url, { type: "module", name: WORKER_NAME });
}
