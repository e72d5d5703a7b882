#!/usr/bin/env bash
# Before and after, one run (not part of CI): the durable pipe of
# sluice-bench against two Sluice binaries in turn, ROUNDS alternating rounds,
# each run on a fresh data directory; prints every run's receive rate, each
# binary's median, and B's median over A's.
#
#   bench/ab.sh ROUNDS BIN_A BIN_B
#
# Build BIN_A from the earlier commit in a `git worktree` with a target
# directory of its own. Workload: N x 100 B durable, at-least-once, window
# 1000, prefetch 1000, one producer and one consumer, as fast as possible.
# Env: N (200000), OUT (default target/ab/DATE).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. bench/lib.sh
[ $# -eq 3 ] || { echo "usage: bench/ab.sh ROUNDS BIN_A BIN_B" >&2; exit 2; }
ROUNDS=$1 A=$2 B=$3
N=${N:-200000}
OUT=${OUT:-$ROOT/target/ab/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
BENCH=$ROOT/target/release/sluice-bench
cargo build --release --quiet -p sluice-bench --bin sluice-bench

PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true' EXIT

# run LABEL BIN: one sluice-bench run against a fresh broker; prints its
# receive rate (msg/s), having checked that every message arrived once.
run() {
  local label=$1 bin=$2 dir=$OUT/$1.$round addr=
  mkdir -p "$dir"
  "$bin" --listen 127.0.0.1:0 --data-dir "$dir/data" \
    --log-level warn,sluice::server=info >"$dir/sluice.log" 2>&1 &
  PID=$!
  addr=$(wait_ready "$dir/sluice.log")
  "$BENCH" --url "amqp://$addr" --address ab --count "$N" --size 100 \
    --window 1000 --prefetch 1000 --json --label "$label" >"$dir/report.json"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  rm -rf "$dir/data"
  receive_rate "$dir/report.json" "$N"
}

for round in $(seq "$ROUNDS"); do
  echo "A $(run A "$A")"
  echo "B $(run B "$B")"
done | tee "$OUT/runs.txt"

python3 - "$OUT/runs.txt" "$A" "$B" <<'PY' | tee "$OUT/summary.txt"
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, rate = line.split()
    runs.setdefault(label, []).append(float(rate))
a, b = statistics.median(runs["A"]), statistics.median(runs["B"])
for label, binary, median in (("A", sys.argv[2], a), ("B", sys.argv[3], b)):
    each = ", ".join(f"{r:.0f}" for r in runs[label])
    print(f"{label} {binary}: median {median:.0f} msg/s ({each})")
print(f"B / A: {b / a:.3f}")
PY
