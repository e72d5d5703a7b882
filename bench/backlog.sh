#!/usr/bin/env bash
# A backlog larger than memory (issue 16; not part of CI).
#
#   bench/backlog.sh
#
# One release `sluice`, its memory watermark at WATERMARK bytes, its data
# directory in OUT:
#   1. hot path: PIPE_SECONDS of one producer and one consumer on queue `hot`
#      (SIZE bytes, durable): the rate a queue that never pages gets;
#   2. fill: PRODUCERS producers send COUNT x SIZE durable messages to queue
#      `backlog`, which nobody consumes, and are never to be blocked;
#   3. kill -9 the broker, start it again on the same data directory, and
#      time it until it announces it is ready;
#   4. drain: one consumer takes every message back: all COUNT must arrive
#      (the run id of the fill is given to the drain, which counts them).
# The broker's resident memory is sampled every second throughout, into
# OUT/rss.csv. Prints each phase's rate, the peak RSS of each phase, the
# restart time and the disk used by pages/ and log/ after the fill.
#
# Env: COUNT (10000000), SIZE (1024), PRODUCERS (4), WATERMARK (268435456),
#      PIPE_SECONDS (10), BUILD (1), OUT (default target/backlog/DATE),
#      KEEP_DATA (0: the data directory is deleted on exit).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. bench/lib.sh
COUNT=${COUNT:-10000000}
SIZE=${SIZE:-1024}
PRODUCERS=${PRODUCERS:-4}
WATERMARK=${WATERMARK:-268435456}
PIPE_SECONDS=${PIPE_SECONDS:-10}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/backlog/$(date -u +%Y%m%dT%H%M%SZ)}
SLUICE=$TARGET/release/sluice
BENCH=$TARGET/release/sluice-bench
RUN_ID=16
mkdir -p "$OUT/data"
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet -p sluice -p sluice-bench --bin sluice --bin sluice-bench
fi

PID='' SAMPLER=''
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  wait 2>/dev/null || true
  # The backlog's log and pages are COUNT x SIZE on disk (10 GB by default).
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$OUT/data"
}
trap cleanup EXIT

cat > "$OUT/sluice.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$OUT/data"
[limits]
memory_high_watermark_bytes = $WATERMARK
EOF

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "sluice: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "COUNT=$COUNT SIZE=$SIZE PRODUCERS=$PRODUCERS WATERMARK=$WATERMARK"
} | tee "$OUT/machine.txt" >&2

phase() { echo "$1" > "$OUT/phase"; }

start() {  # start LOG: starts the broker, its pid in PID
  "$SLUICE" --config "$OUT/sluice.toml" > "$1" 2>&1 &
  PID=$!
  echo "$PID" > "$OUT/pid"
}

phase start
sample_rss "$OUT" &
SAMPLER=$!
start "$OUT/broker.log"
ADDR=$(wait_ready "$OUT/broker.log")

phase hot
"$BENCH" --url "amqp://$ADDR" --address hot --size "$SIZE" --duration "${PIPE_SECONDS}s" \
  --json --quiet > "$OUT/hot.json"

phase fill
"$BENCH" --url "amqp://$ADDR" --address backlog --size "$SIZE" --producers "$PRODUCERS" \
  --consumers 0 --count "$COUNT" --run-id "$RUN_ID" --json --quiet > "$OUT/fill.json"
du -sm "$OUT/data/pages" "$OUT/data/log" > "$OUT/disk.txt"

phase restart
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
BEFORE=$(date +%s.%N)
start "$OUT/broker-2.log"
ADDR=$(wait_ready "$OUT/broker-2.log")
AFTER=$(date +%s.%N)

phase drain
"$BENCH" --url "amqp://$ADDR" --address backlog --size "$SIZE" --producers 0 \
  --consumers 1 --count "$COUNT" --run-id "$RUN_ID" --json --quiet > "$OUT/drain.json"
phase done
sleep 1

python3 - "$OUT" "$COUNT" "$BEFORE" "$AFTER" <<'PY' | tee "$OUT/summary.txt"
import csv, json, sys
out, count, before, after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
hot = json.load(open(f"{out}/hot.json"))
fill = json.load(open(f"{out}/fill.json"))
drain = json.load(open(f"{out}/drain.json"))
peak = {}
for row in csv.DictReader(open(f"{out}/rss.csv")):
    peak[row["phase"]] = max(peak.get(row["phase"], 0), int(row["rss_mib"]))
print(f"hot path: {hot['recv_msg_s']:.0f} msg/s (1 producer, 1 consumer)")
print(f"fill: {fill['accepted']} of {fill['sent']} accepted, {fill['send_msg_s']:.0f} msg/s, "
      f"{fill['rejected']} rejected, {fill['unconfirmed']} unconfirmed, "
      f"{len(fill['stalls'])} stalls")
print(f"restart after kill -9: ready in {after - before:.2f} s")
print(f"drain: {drain['received']} of {count} received, {drain['recv_msg_s']:.0f} msg/s, "
      f"{drain['duplicates']} duplicates")
print(f"drain / hot path: {drain['recv_msg_s'] / hot['recv_msg_s']:.2f}")
print("peak RSS (MiB) by phase: " + ", ".join(f"{k} {v}" for k, v in peak.items()))
print("disk after the fill (MiB): " + open(f"{out}/disk.txt").read().replace("\n", "; "))
if drain["received"] != count:
    sys.exit(f"lost {count - drain['received']} messages")
PY
