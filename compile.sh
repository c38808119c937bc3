#!/usr/bin/env bash
# Builds the single binary dist/backy with `deno compile` and backy's permission set
# (design D15). `deno compile` downloads Deno's runtime (denort) from Deno's server; where
# that is unreachable this script says so and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"
DENO=${DENO:-$(command -v deno || echo "npx -y deno@2.9.6")}
mkdir -p dist
# Reads/writes job directories, runs rbd/qemu-img/qemu-nbd/cp and itself, binds the telnet
# shell and talks to Consul, punches holes through libc (FFI).
PERMS=(--allow-read --allow-write --allow-env --allow-sys
  --allow-run --allow-net --allow-ffi)
log=$(mktemp)
if $DENO compile "${PERMS[@]}" --include src/backup/worker.ts --output dist/backy mod.ts 2>"$log"; then
  rm -f "$log"
  echo "built dist/backy"
  exit 0
fi
if grep -qiE 'denort|download|dl\.deno\.land|error sending request|dns|connect' "$log"; then
  echo "compile.sh: deno compile could not download Deno's runtime (denort) from Deno's server," >&2
  echo "which is unreachable from this machine; no binary was built. Run backy from source" >&2
  echo "instead: deno run --allow-all mod.ts ... (details: $log)" >&2
else
  cat "$log" >&2
fi
exit 1
