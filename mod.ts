/** backy: block-based backup and restore for virtual machine images. */
import { main } from "./src/cli/main.ts";
import { inDataWorker } from "./src/util/entry.ts";

// A data-path Worker of the bundle loads this whole file too (src/util/entry.ts).
if (import.meta.main && !inDataWorker()) {
  Deno.exit(await main(Deno.args));
}
