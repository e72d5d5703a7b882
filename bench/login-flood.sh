#!/usr/bin/env bash
# A bad-login flood against an established client (issue 15; not part of CI).
#
#   bench/login-flood.sh
#
# One release `sluice` with one account (`bench`, its argon2 hash and SCRAM
# credential made by `sluice passwd` with its default parameters), PLAIN
# offered without TLS (`[auth] allow_plain_without_tls`, so that each PLAIN
# guess costs an argon2 check, the expensive case, without the TLS handshake
# on top) and the HTTP listener for /metrics. A FRESH broker for every run, so
# that no run inherits the per-source throttle's record of the one before.
# In each of ROUNDS rounds, three runs, each sluice-bench logged in as `bench`
# (PLAIN): N x 100 B durable, window 1000, prefetch 1000, one producer and one
# consumer, for DURATION seconds, with WORKLOAD's offered load:
#   quiet   nothing else;
#   plain   FLOOD_AFTER seconds in, sluice-login-flood makes ATTEMPTS logins
#           as `bench` with a wrong password, PLAIN, PARALLEL connections at a
#           time, from the same host (127.0.0.1: one source);
#   scram   the same with SCRAM-SHA-256.
# Prints per run the busy client's receive rate, latency and broker CPU per
# message, and the flood's duration, outcomes (auth: checked; sys-temp:
# refused at once) and the rise of sluice_auth_failures_total; then the
# medians, and each flood's ÷ quiet of the same round.
#
# Env: ROUNDS (3), DURATION (6), FLOOD_AFTER (0.5), ATTEMPTS (1000), PARALLEL
#      (64), WORKLOADS ("pipe rate5k": full speed, and 5,000 msg/s), BUILD (1),
#      OUT (default target/login-flood/DATE).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
FLOOD_AFTER=${FLOOD_AFTER:-0.5}
ATTEMPTS=${ATTEMPTS:-1000}
PARALLEL=${PARALLEL:-64}
WORKLOADS=${WORKLOADS:-pipe rate5k}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/login-flood/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SLUICE=$TARGET/release/sluice
BENCH=$TARGET/release/sluice-bench
FLOOD=$TARGET/release/sluice-login-flood
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet -p sluice -p sluice-bench \
    --bin sluice --bin sluice-bench --bin sluice-login-flood
fi
PASSWORD="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
HASH=$(printf '%s\n' "$PASSWORD" | "$SLUICE" passwd)
SCRAM=$(printf '%s\n' "$PASSWORD" | "$SLUICE" passwd --scram)

PID='' BPID=''
cleanup() {
  [ -n "$BPID" ] && kill "$BPID" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "sluice: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ROUNDS=$ROUNDS DURATION=$DURATION FLOOD_AFTER=$FLOOD_AFTER ATTEMPTS=$ATTEMPTS PARALLEL=$PARALLEL WORKLOADS=\"$WORKLOADS\""
} | tee "$OUT/machine.txt" >&2

auth_failures() {  # HTTP_ADDR: sluice_auth_failures_total
  python3 - "$1" <<'PY'
import sys, urllib.request
for line in urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode().splitlines():
    if line.startswith("sluice_auth_failures_total "):
        print(int(float(line.split()[1])))
PY
}

# run WORKLOAD MODE ROUND: one run on a fresh broker; writes $OUT/WORKLOAD.MODE.ROUND.*
run() {
  local w=$1 mode=$2 round=$3 dir=$OUT/$1.$2.$3 addr http rate=()
  mkdir -p "$dir"
  cat > "$dir/sluice.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$dir/data"
[http]
listen = "127.0.0.1:0"
[auth]
allow_plain_without_tls = true
[[users]]
name = "bench"
password_hash = "$HASH"
scram_sha256 = "$SCRAM"
EOF
  chmod 600 "$dir/sluice.toml"
  "$SLUICE" --config "$dir/sluice.toml" --log-level warn,sluice::server=info >"$dir/sluice.log" 2>&1 &
  PID=$!
  addr=$(wait_ready "$dir/sluice.log")
  http=$(sed -n 's/.*sluice ready: .*http=\([0-9.:]*\).*/\1/p' "$dir/sluice.log" | head -1)
  [ "$w" = rate5k ] && rate=(--rate 5000)
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" > "$dir/load.txt"
  "$BENCH" --url "amqp://bench:$PASSWORD@$addr" --address flood --duration "${DURATION}s" \
    --size 100 --window 1000 --prefetch 1000 "${rate[@]}" --broker-pid "$PID" \
    --json --quiet --label "$w.$mode" >"$dir/bench.json" &
  BPID=$!
  if [ "$mode" != quiet ]; then
    sleep "$FLOOD_AFTER"
    local before
    before=$(auth_failures "$http")
    "$FLOOD" --addr "$addr" --user bench --mechanism "$mode" --attempts "$ATTEMPTS" \
      --parallel "$PARALLEL" >"$dir/flood.json"
    echo "{\"auth_failures_total_before\": $before, \"auth_failures_total_after\": $(auth_failures "$http")}" \
      >"$dir/metrics.json"
  fi
  wait "$BPID" || echo "$w $mode $round: sluice-bench failed" >&2
  BPID=
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  rm -rf "$dir/data"
}

for round in $(seq "$ROUNDS"); do
  for w in $WORKLOADS; do
    for mode in quiet plain scram; do
      echo "login-flood.sh: $(date -u +%T) round $round, $w, $mode" >&2
      run "$w" "$mode" "$round"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

python3 - "$OUT" "$ROUNDS" "$WORKLOADS" <<'PY' | tee "$OUT/table.md"
import json, os, statistics, sys
out, rounds, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None
print("| workload | run | round | load | recv msg/s | p50 ms | p99 ms | broker µs/msg | flood s | checked (auth) | sys-temp | other | auth_failures_total + |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
ratios = {}
for w in workloads:
    for r in range(1, rounds + 1):
        quiet = None
        for mode in ("quiet", "plain", "scram"):
            d = f"{out}/{w}.{mode}.{r}"
            b, f, m = load(f"{d}/bench.json"), load(f"{d}/flood.json"), load(f"{d}/metrics.json")
            load_avg = open(f"{d}/load.txt").read().split(":")[1].split()[0] if os.path.exists(f"{d}/load.txt") else "?"
            if not b:
                print(f"| {w} | {mode} | {r} | {load_avg} | failed | | | | | | | | |")
                continue
            lat = b.get("latency") or {}
            row = dict(rate=b["recv_msg_s"], p50=lat.get("p50_us", 0) / 1000, p99=lat.get("p99_us", 0) / 1000,
                       cpu=(b.get("broker_cpu") or {}).get("us_per_msg"))
            if b.get("lost") or b.get("duplicates"):
                print(f"{d}: lost {b.get('lost')} duplicates {b.get('duplicates')}", file=sys.stderr)
            if mode == "quiet":
                quiet = row
            elif quiet:
                ratios.setdefault((w, mode), []).append((row["rate"] / quiet["rate"], row["p50"] / quiet["p50"], row["p99"] / quiet["p99"]))
            fl = f"{f['elapsed_s']:.2f} | {f['auth']} | {f['sys_temp']} | {f['other'] + f['timed_out'] + f['admitted']}" if f else " | | | "
            rise = m["auth_failures_total_after"] - m["auth_failures_total_before"] if m else ""
            cpu = f"{row['cpu']:.1f}" if row["cpu"] is not None else "?"
            print(f"| {w} | {mode} | {r} | {load_avg} | {row['rate']:,.0f} | {row['p50']:.2f} | {row['p99']:.2f} | {cpu} | {fl} | {rise} |")
print()
print("| workload | flood | recv msg/s ÷ quiet, per round | median | p50 ÷ quiet, median | p99 ÷ quiet, median |")
print("|---|---|---|---:|---:|---:|")
for (w, mode), rs in ratios.items():
    each = ", ".join(f"{x[0]:.2f}" for x in rs)
    med = lambda i: statistics.median(x[i] for x in rs)
    print(f"| {w} | {mode} | {each} | {med(0):.2f} | {med(1):.2f} | {med(2):.2f} |")
PY
echo "login-flood.sh: results in $OUT" >&2
