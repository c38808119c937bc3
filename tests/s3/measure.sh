#!/usr/bin/env bash
# measure.sh — backy's s3 backend against the test gateway (radosgw on the throw-away Ceph
# cluster), in one interleaved run: backup/restore throughput vs s3cmd put/get and rados put/get
# of the same data; 1, 2 and 4 concurrent backup processes ("hosts"); requests per
# incremental backup (counted in radosgw's access log). Root, Debian's ceph + radosgw + s3cmd.
#   bash tests/s3/measure.sh [MiB] [rounds]      (defaults: 256 MiB, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${1:-256} ROUNDS=${2:-3}
DIR=${CEPH_TEST_DIR:-/tmp/backy-ceph-test}
if [ -z "${CEPH_TEST_DIR:-}" ]; then bash tests/ceph/cluster.sh start "$DIR" >/dev/null; fi
eval "$(bash tests/ceph/cluster.sh rgw "$DIR")"
export CEPH_CONF=$DIR/ceph.conf
export AWS_ENDPOINT_URL=$BACKY_TEST_RGW_URL AWS_ACCESS_KEY_ID=$BACKY_TEST_RGW_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$BACKY_TEST_RGW_SECRET_KEY
RGWLOG=$DIR/log/rgw.x.log
W=$(mktemp -d /tmp/backy-s3-measure.XXXX)
POOL=backy-measure-$$
cleanup() {
  ceph osd pool rm "$POOL" "$POOL" --yes-i-really-really-mean-it >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
ceph osd pool create "$POOL" 8 >/dev/null 2>&1
cat >"$W/s3cfg" <<CFG
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = ${AWS_ENDPOINT_URL#http://}
host_bucket = ${AWS_ENDPOINT_URL#http://}
use_https = False
signature_v2 = False
bucket_location = us-east-1
CFG
S3="s3cmd -q -c $W/s3cfg"
BACKY="deno run --allow-all --quiet mod.ts"
head -c "${SIZE}M" /dev/urandom >"$W/img"

now() { date +%s.%N; }
rate() { awk -v s="$1" -v e="$2" -v m="$3" 'BEGIN{printf "%.0f", m/(e-s)}'; }
declare -A SUM
add() { SUM[$1]="${SUM[$1]:-} $2"; }

for r in $(seq 1 "$ROUNDS"); do
  # backy: a fresh bucket and job, full backup (copy + full verification read-back), restore
  $S3 mb "s3://m-backy-$$-$r"
  $BACKY -b "$W/job$r" init --backend s3 --bucket "m-backy-$$-$r" file "$W/img" >/dev/null
  s=$(now); $BACKY -b "$W/job$r" backup manual:m >/dev/null; e=$(now)
  add "backy backup (incl. verify)" "$(rate "$s" "$e" "$SIZE")"
  s=$(now); $BACKY -b "$W/job$r" restore "$W/out" >/dev/null; e=$(now)
  add "backy restore" "$(rate "$s" "$e" "$SIZE")"
  cmp "$W/img" "$W/out"; rm -f "$W/out"
  # s3cmd: one object (multipart upload, 15 MiB parts)
  $S3 mb "s3://m-s3cmd-$$-$r"
  s=$(now); $S3 put "$W/img" "s3://m-s3cmd-$$-$r/img"; e=$(now)
  add "s3cmd put" "$(rate "$s" "$e" "$SIZE")"
  s=$(now); $S3 get --force "s3://m-s3cmd-$$-$r/img" "$W/out"; e=$(now)
  add "s3cmd get" "$(rate "$s" "$e" "$SIZE")"
  cmp "$W/img" "$W/out"; rm -f "$W/out"
  # rados: straight into a pool (no gateway), striped into 4 MiB objects
  s=$(now); rados --striper -p "$POOL" put "img$r" "$W/img"; e=$(now)
  add "rados put (striper)" "$(rate "$s" "$e" "$SIZE")"
  s=$(now); rados --striper -p "$POOL" get "img$r" "$W/out"; e=$(now)
  add "rados get (striper)" "$(rate "$s" "$e" "$SIZE")"
  cmp "$W/img" "$W/out"; rm -f "$W/out"
  rados --striper -p "$POOL" rm "img$r" || true
  $S3 del --force -r "s3://m-s3cmd-$$-$r" >/dev/null; $S3 rb "s3://m-s3cmd-$$-$r"
done
echo "== throughput, MB/s per round ($SIZE MiB of random data, $ROUNDS rounds interleaved)"
for k in "backy backup (incl. verify)" "backy restore" "s3cmd put" "s3cmd get" "rados put (striper)" "rados get (striper)"; do
  printf '%-30s %s\n' "$k" "${SUM[$k]}"
done

echo "== concurrent hosts: each its own job and 128 MiB image, one bucket"
$S3 mb "s3://m-conc-$$"
for n in 1 2 4; do
  for i in $(seq 1 "$n"); do
    head -c 128M /dev/urandom >"$W/c$n-$i.img"
    $BACKY -b "$W/c$n-$i" init --backend s3 --bucket "m-conc-$$" file "$W/c$n-$i.img" >/dev/null
    sed -i "s/^s3:/s3:\n  host: host-$i/" "$W/c$n-$i/config"
  done
  s=$(now)
  for i in $(seq 1 "$n"); do $BACKY -b "$W/c$n-$i" backup manual:m >/dev/null & done
  wait
  e=$(now)
  printf '%d host(s): %s MB/s in all (%.1f s)\n' "$n" "$(rate "$s" "$e" $((128 * n)))" "$(awk -v s="$s" -v e="$e" 'BEGIN{print e-s}')"
  rm -f "$W"/c$n-*.img
done

echo "== requests per incremental backup ($SIZE MiB job, one 4 KiB write in one block)"
b=m-backy-$$-1
before=$(wc -l <"$RGWLOG")
printf 'x' | dd of="$W/img" bs=1 seek=$((5 * 1024 * 1024 + 17)) conv=notrunc 2>/dev/null
$BACKY -b "$W/job1" backup manual:inc >/dev/null
tail -n +"$((before + 1))" "$RGWLOG" | grep -o "\"[A-Z]* /$b[/?][^ ]*" |
  sed -E 's#^"([A-Z]+) /[^/?]+[/?]([a-z]+|list-type)?.*#\1 \2#' | sort | uniq -c
echo "(bucket-level GETs with list-type are listings)"
