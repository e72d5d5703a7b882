#!/usr/bin/env bash
# Fleets of queues, connections, consumers and links (issue 16; not part of
# CI): `sluice-bench fleet` against a fresh release Sluice at each scale.
#
#   bench/fleet.sh                       # scales 1 and 10
#   SCALES=1 SLUICE=/tmp/before/sluice bench/fleet.sh
#
# At scale S the run declares S × QUEUES queues, opens S × CONNECTIONS idle
# connections, attaches S × CONSUMERS consumers each on its own queue and
# S × LINKS consumers of one queue on one connection, which it then drops
# (see `sluice-bench fleet --help`). Each broker gets a fresh data directory,
# listens on a free port, and allows the connections (limits.max_connections;
# `ulimit -n` is raised to the hard limit, which must hold them twice: the
# broker's sockets and the client's). The client runs with --broker-pid for
# the broker's RSS. One text report and one JSON line per scale, in OUT.
#
# Env: SLUICE (target/release/sluice), BENCH (target/release/sluice-bench),
#      SCALES ("1 10"), QUEUES (10000), CONNECTIONS (1000), CONSUMERS (1000),
#      LINKS (6500), OUT (target/fleet/DATE), LABEL (sluice).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

TARGET=${CARGO_TARGET_DIR:-target}
SLUICE=${SLUICE:-$TARGET/release/sluice}
BENCH=${BENCH:-$TARGET/release/sluice-bench}
SCALES=${SCALES:-1 10}
QUEUES=${QUEUES:-10000}
CONNECTIONS=${CONNECTIONS:-1000}
CONSUMERS=${CONSUMERS:-1000}
LINKS=${LINKS:-6500}
LABEL=${LABEL:-sluice}
OUT=${OUT:-$TARGET/fleet/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

PID=''
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; true; }
trap cleanup EXIT

for scale in $SCALES; do
  dir=$(mktemp -d)
  connections=$((scale * CONNECTIONS))
  cat > "$dir/sluice.toml" <<EOF
[limits]
max_connections = $((connections + 1000))
EOF
  "$SLUICE" --config "$dir/sluice.toml" --data-dir "$dir/data" --listen 127.0.0.1:0 \
    --log-level warn,sluice::server=info 2> "$dir/sluice.log" &
  PID=$!
  addr=$(wait_ready "$dir/sluice.log")
  echo "scale $scale: $SLUICE ($("$SLUICE" --version 2>/dev/null || echo '?')) on $addr, pid $PID" | tee "$OUT/scale-$scale.txt"
  "$BENCH" fleet --url "amqp://$addr" --broker-pid "$PID" --label "$LABEL x$scale" \
    --queues $((scale * QUEUES)) --connections "$connections" \
    --consumers $((scale * CONSUMERS)) --links $((scale * LINKS)) --json \
    2> "$OUT/scale-$scale.progress" > "$OUT/scale-$scale.json"
  python3 - "$OUT/scale-$scale.json" <<'PY' | tee -a "$OUT/scale-$scale.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['label']}: witness {r['witness_before_msg_s']:.0f} msg/s before, {r['witness_after_msg_s']:.0f} after")
for p in r["phases"]:
    s = p["step_s"]
    if not s:
        continue
    each = ""
    if p["rss_before"] is not None:
        each = f", RSS +{(p['rss_after'] - p['rss_before']) / max(p['count'], 1):.0f} B each"
    print(f"  {p['name']:<11} {p['count']:>7}: {sum(s):8.2f} s; per step first {s[0]:.3f} s, "
          f"median {sorted(s)[len(s) // 2]:.3f} s, last {s[-1]:.3f} s{each}")
t = r["teardown"]
print(f"  drop of {t['links']} links: round trip {t['baseline_ms']:.1f} ms before, worst {t['worst_ms']:.1f} ms, "
      f"slow until {t['normal_after_ms']:.0f} ms after; idle connections closed by the broker: {r['idle_closed']}")
PY
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  rm -rf "$dir"
done
echo "results in $OUT"
