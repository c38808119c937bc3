/** backy: block-based backup and restore for virtual machine images. */
import { main } from "./src/cli/main.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
