/** backy: block-based backup and restore for virtual machine images. */
import { inDataWorker } from "./src/util/entry.ts";
// Loaded here, at the top, so that in a data-path Worker of the bundle (which is this whole
// file) it runs and starts the Worker code; in the main thread it only defines newDataWorker.
import "./src/backup/worker_entry.ts";

// A data-path Worker of the bundle loads this whole file too (src/util/entry.ts): it must
// not run the CLI, nor pay for loading it (hence the dynamic import).
if (import.meta.main && !inDataWorker()) {
  const { main } = await import("./src/cli/main.ts");
  Deno.exit(await main(Deno.args));
}
