#!/bin/bash
# Start-up: backy from source (deno run mod.ts) vs the artifact (dist/backy.js), warm and cold
# page cache (root: drop_caches), interleaved, 5 rounds. Needs `deno task dist` first:
#   deno task dist && bash bench/startup.sh
set -e
cd "$(dirname "$0")/.."
job=$(mktemp -d /var/tmp/startup.XXXX)
head -c 8M /dev/urandom > $job.img
deno run --allow-all mod.ts -b $job/j init file $job.img >/dev/null 2>&1
deno run --allow-all mod.ts -b $job/j backup daily >/dev/null 2>&1
ms() { echo $(( ($(date +%s%N)-$1)/1000000 )); }
src() { deno run --allow-all --v8-flags=--max-semi-space-size=1 mod.ts "$@"; }
art() { ./dist/backy.js "$@"; }
for round in 1 2 3 4 5; do
  for cache in warm cold; do
    for how in src art; do
      [ $cache = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
      s=$(date +%s%N); $how --version >/dev/null 2>&1; v=$(ms $s)
      [ $cache = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
      s=$(date +%s%N); $how -b $job/j status >/dev/null 2>&1; st=$(ms $s)
      echo "$round $cache $how version=$v status=$st"
    done
  done
done
rm -rf $job $job.img
