#!/usr/bin/env bash
# Throughput of the queue types against a plain queue, in one run (issue 13;
# not part of CI). Builds the release binaries, starts one Sluice on a fresh
# data directory with a priority queue configured, and runs sluice-bench
# with the same workload (N x 100 B durable, at-least-once, window 1000,
# prefetch 1000, one producer and one consumer, as fast as possible) on:
#   plain      a plain queue, messages carrying application property
#              instrument=EURUSD
#   selector   the same, the consumer selecting instrument = 'EURUSD'
#              (every message matches: the cost is the selector's alone)
#   priority   a priority queue (10 levels), messages of header priority 7
# REPEAT rounds of the three, interleaved; prints each run's msg/s, the
# medians, and the ratios to plain.
#
# Env: N (100000), REPEAT (3), OUT (default target/queue-types/DATE).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. bench/lib.sh
N=${N:-100000}
REPEAT=${REPEAT:-3}
OUT=${OUT:-$ROOT/target/queue-types/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
BENCH=$ROOT/target/release/sluice-bench
SLUICE=$ROOT/target/release/sluice

cargo build --release --quiet -p sluice -p sluice-bench --bin sluice --bin sluice-bench

cat >"$OUT/sluice.toml" <<TOML
[[queue]]
name = "types-priority"
type = "priority"
TOML

SLUICE_PID=
trap '[ -n "$SLUICE_PID" ] && kill "$SLUICE_PID" 2>/dev/null; wait 2>/dev/null || true' EXIT
"$SLUICE" --config "$OUT/sluice.toml" --listen 127.0.0.1:0 --data-dir "$OUT/data" \
  --log-level warn,sluice::server=info >"$OUT/sluice.log" 2>&1 &
SLUICE_PID=$!
addr=$(wait_ready "$OUT/sluice.log")

# run NAME ADDRESS ARGS...: one sluice-bench run; prints its receive rate
# (msg/s), having checked that every message arrived once.
run() {
  local name=$1 address=$2; shift 2
  "$BENCH" --url "amqp://$addr" --address "$address" --count "$N" --size 100 \
    --window 1000 --prefetch 1000 --json --label "$name" "$@" >"$OUT/$name.$round.json"
  receive_rate "$OUT/$name.$round.json" "$N"
}

for round in $(seq "$REPEAT"); do
  echo "plain $(run plain types-plain --property instrument=EURUSD)"
  echo "selector $(run selector types-selector --property instrument=EURUSD \
    --selector "instrument = 'EURUSD'")"
  echo "priority $(run priority types-priority --property instrument=EURUSD --priority 7)"
done | tee "$OUT/runs.txt"

python3 - "$OUT/runs.txt" <<'PY' | tee "$OUT/table.md"
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, rate = line.split()
    runs.setdefault(name, []).append(float(rate))
plain = statistics.median(runs["plain"])
print("| queue | msg/s (median) | runs | ratio to plain |")
print("|---|---|---|---|")
for name, rates in runs.items():
    median = statistics.median(rates)
    each = ", ".join(f"{r:.0f}" for r in rates)
    print(f"| {name} | {median:.0f} | {each} | {median / plain:.3f} |")
PY
