#!/usr/bin/env bash
# Builds the single binary dist/backy with `deno compile` from the offline artifact
# dist/backy.js (`deno task dist`), with backy's permission set (src/util/entry.ts,
# docs/permissions.md). `deno compile` downloads Deno's runtime (denort) from Deno's
# server; where that is unreachable this script says so, exits non-zero, and
# dist/backy.js is still there to use with the deno binary alone.
set -euo pipefail
cd "$(dirname "$0")"
DENO=${DENO:-$(command -v deno || echo "npx -y deno@2.9.6")}
exec $DENO run --quiet --allow-read --allow-write --allow-run --allow-env dist.ts --compile
