#!/usr/bin/env bash
# Side-by-side baseline (issue 5; not part of CI). Builds release binaries,
# then, one broker after the other in this one run:
#   sluice    release `sluice --listen 127.0.0.1:0`, fresh data dir
#   proton    Qpid Proton's C example broker, in memory (../shared/peers/proton-broker.sh)
#   rmq310    RabbitMQ 3.10 classic queue, if installed (../shared/peers/rmq-node.sh)
#   rmq40     RabbitMQ 4.0 classic queue, if the chroot from setup-rabbitmq4-chroot.sh exists
#   base      (only if named in BROKERS) an earlier Sluice build, the binary BASE_SLUICE:
#             a change's before-and-after in one run, e.g.
#             BROKERS="base sluice proton base sluice" BASE_SLUICE=/tmp/old/sluice
# each driven by sluice-bench and by the independent Proton C client
# (../shared/peers/amqp_bench.py --client c), same workload:
#   pipe      N x 100 B durable, at-least-once, window 1000, prefetch 1000,
#             producer and consumer together, as fast as possible
#   rate5k    RATE_N messages at a fixed 5000 msg/s, for latency
#   presettled (sluice-bench only) N x 100 B non-durable, at-most-once
# then prints a table with the ratios against Sluice (same client, same workload).
#
# The Proton C client's --rate mode queues transfers from a timer event without waking the
# connection, so they leave only at its next I/O event: against a broker that answers before
# the next send is due it stalls until a heartbeat (Proton's broker always; Sluice often).
# rate5k therefore runs a copy of amqp_perf.c with one added pn_connection_wake after that
# timer-driven pump, built into target/compare/amqp_perf_rate (set RATE_CLIENT_PATCH=0 to
# use the peers' client unchanged, and skip Proton's broker as before).
#
# Env: N (100000), RATE_N (25000), SIZE (100), REPEAT (1: amqp_bench runs per cell,
#      median), PEERS_DIR (~/.cache/sluice-peers), RMQ_NODE (3 -> port 5674),
#      RMQ4_NODE (13 -> port 5684), BROKERS ("sluice proton rmq310 rmq40"),
#      OUT (results directory, default target/compare/DATE).
# Loopback only. Every process it starts is stopped on exit (trap), by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PEERS=${PEERS:-$ROOT/../shared/peers}
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/sluice-peers}
export PEERS_DIR
PY=$PEERS_DIR/venv/bin/python
N=${N:-100000}
RATE_N=${RATE_N:-25000}
SIZE=${SIZE:-100}
REPEAT=${REPEAT:-1}
RMQ_NODE=${RMQ_NODE:-3}
RMQ4_NODE=${RMQ4_NODE:-13}
BROKERS=${BROKERS:-sluice proton rmq310 rmq40}
OUT=${OUT:-$ROOT/target/compare/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
BENCH=$ROOT/target/release/sluice-bench
SLUICE=$ROOT/target/release/sluice
RUN_TIMEOUT=${RUN_TIMEOUT:-120}

log() { echo "compare.sh: $*" >&2; }

# --- cleanup ---------------------------------------------------------------
SLUICE_PID= PROTON_PID= RMQ_STARTED= RMQ4_STARTED= WORK=
cleanup() {
  set +e
  [ -n "$SLUICE_PID" ] && kill "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null
  [ -n "$PROTON_PID" ] && kill "$PROTON_PID" 2>/dev/null && wait "$PROTON_PID" 2>/dev/null
  [ -n "$RMQ_STARTED" ] && "$PEERS/rmq-node.sh" stop "$RMQ_NODE" >/dev/null 2>&1
  [ -n "$RMQ4_STARTED" ] && RMQ_CHROOT=$PEERS_DIR/trixie "$PEERS/rmq-node.sh" stop "$RMQ4_NODE" >/dev/null 2>&1
  [ -n "$RMQ_STARTED$RMQ4_STARTED" ] && "$PEERS/rmq-node.sh" stop-epmd >/dev/null 2>&1
  [ -n "$WORK" ] && rm -rf "$WORK"
  SLUICE_PID= PROTON_PID= RMQ_STARTED= RMQ4_STARTED=
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- build -------------------------------------------------------------------
log "building release binaries"
cargo build --release --quiet -p sluice -p sluice-bench --bin sluice --bin sluice-bench
[ -x "$PY" ] || { log "no $PY: run $PEERS/setup.sh"; exit 1; }
[ -x "$PEERS_DIR/amqp_perf" ] || { log "no $PEERS_DIR/amqp_perf: run $PEERS/setup.sh"; exit 1; }
WORK=$(mktemp -d)

# --- the C client for fixed rates (see the header) ---------------------------
RATE_CLIENT=$PEERS_DIR/amqp_perf
if [ "${RATE_CLIENT_PATCH:-1}" = 1 ]; then
  patched=$ROOT/target/compare/amqp_perf_rate
  mkdir -p "$ROOT/target/compare"
  if python3 - "$PEERS/amqp_perf.c" "$WORK/amqp_perf_rate.c" <<'PATCH' &&
import sys
src = open(sys.argv[1]).read()
old = "    a->timer_for_rate = false;\n    if (a->sender) pump(a);\n"
new = ("    a->timer_for_rate = false;\n    if (a->sender) {\n      pump(a);\n"
       "      if (a->link) pn_connection_wake(pn_session_connection(pn_link_session(a->link)));\n"
       "    }\n")
if src.count(old) != 1:
    sys.exit("amqp_perf.c changed: the rate patch does not apply")
open(sys.argv[2], "w").write(src.replace(old, new))
PATCH
    gcc -O2 -Wall -o "$patched" "$WORK/amqp_perf_rate.c" -lqpid-proton -lm; then
    RATE_CLIENT=$patched
  else
    log "could not build the patched rate client: rate5k uses the peers' client"
  fi
fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  # The disk's fsync latency varies a lot on a shared machine; it bounds the durable cells.
  echo "fsync before: $(python3 - "$WORK" <<'FSYNC'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
took = []
for _ in range(200):
    start = time.perf_counter()
    os.write(fd, b"x" * 180)
    os.fsync(fd)
    took.append((time.perf_counter() - start) * 1e6)
os.close(fd)
os.unlink(path)
took.sort()
print(f"200 appends of 180 B, fsync each: p50 {took[100]:.0f} us, p90 {took[180]:.0f} us, p99 {took[198]:.0f} us")
FSYNC
)"
  echo "sluice: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
  echo "N=$N RATE_N=$RATE_N SIZE=$SIZE REPEAT=$REPEAT"
} | tee "$OUT/machine.txt" >&2

# --- one broker's cells ------------------------------------------------------
# run_cells NAME URL ADDRESS PID [PURGE-COMMAND...]
run_cells() {
  local name=$1 url=$2 address=$3 pid=$4; shift 4
  local purge=("$@")
  local common=(--size "$SIZE" --window 1000 --prefetch 1000)
  p() { [ ${#purge[@]} -eq 0 ] || "${purge[@]}" >/dev/null 2>&1 || true; }

  log "$name: sluice-bench pipe"
  p; timeout "$RUN_TIMEOUT" "$BENCH" --url "$url" --address "$address" --count "$N" "${common[@]}" \
      --broker-pid "$pid" --label "$name" --json --quiet > "$OUT/$name.sb.pipe.json" \
    || log "$name: sluice-bench pipe failed"
  log "$name: amqp_bench (Proton C) pipe"
  p; timeout "$RUN_TIMEOUT" "$PY" "$PEERS/amqp_bench.py" --client c --url "$url" --address "$address" \
      -n "$N" "${common[@]}" --repeat "$REPEAT" --broker-pid "$pid" --label "$name-pipe" \
      --json "$OUT/$name.c.pipe.jsonl" >&2 \
    || log "$name: amqp_bench pipe failed"
  log "$name: sluice-bench rate5k"
  p; timeout "$RUN_TIMEOUT" "$BENCH" --url "$url" --address "$address" --count "$RATE_N" --rate 5000 \
      "${common[@]}" --broker-pid "$pid" --label "$name" --json --quiet > "$OUT/$name.sb.rate5k.json" \
    || log "$name: sluice-bench rate5k failed"
  if [ "$name" = proton ] && [ "$RATE_CLIENT" = "$PEERS_DIR/amqp_perf" ]; then
    # The unpatched client's --rate mode hangs against Proton's example broker (see the header).
    log "$name: amqp_bench rate5k skipped (hangs against this broker)"
  else
    log "$name: amqp_bench (Proton C) rate5k"
    p; timeout "$RUN_TIMEOUT" "$PY" "$PEERS/amqp_bench.py" --client c --c-bin "$RATE_CLIENT" \
        --url "$url" --address "$address" \
        -n "$RATE_N" "${common[@]}" --rate 5000 --repeat "$REPEAT" --broker-pid "$pid" \
        --label "$name-rate5k" --json "$OUT/$name.c.rate5k.jsonl" >&2 \
      || log "$name: amqp_bench rate5k failed"
  fi
  log "$name: sluice-bench presettled non-durable"
  p; timeout "$RUN_TIMEOUT" "$BENCH" --url "$url" --address "$address" --count "$N" --presettled \
      --non-durable "${common[@]}" --broker-pid "$pid" --label "$name" --json --quiet \
      > "$OUT/$name.sb.presettled.json" \
    || log "$name: sluice-bench presettled failed"
}

# run_sluice NAME BINARY: one Sluice build's cells, in a fresh data directory.
run_sluice() {
  local name=$1 binary=$2 addr=
  mkdir -p "$WORK/$name"
  "$binary" --listen 127.0.0.1:0 --data-dir "$WORK/$name/data" --log-level warn,sluice::server=info \
    > "$WORK/$name/log" 2>&1 &
  SLUICE_PID=$!
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*sluice ready: amqp=\([0-9.:]*\).*/\1/p' "$WORK/$name/log" | head -1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { log "$name did not start:"; cat "$WORK/$name/log" >&2; exit 1; }
  log "$name on $addr (pid $SLUICE_PID)"
  run_cells "$name" "amqp://$addr" bench-q "$SLUICE_PID"
  kill "$SLUICE_PID"; wait "$SLUICE_PID" 2>/dev/null || true; SLUICE_PID=
}

for broker in $BROKERS; do
  case "$broker" in
  sluice) run_sluice sluice "$SLUICE" ;;
  base)
    [ -x "${BASE_SLUICE:-}" ] || { log "base: set BASE_SLUICE to an earlier sluice binary"; exit 2; }
    run_sluice base "$BASE_SLUICE"
    ;;
  proton)
    port=$(free_port)
    "$PEERS/proton-broker.sh" "$port" > "$WORK/proton.log" 2>&1 &
    PROTON_PID=$!
    for _ in $(seq 1 100); do
      (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
      sleep 0.1
    done
    log "proton example broker on 127.0.0.1:$port (pid $PROTON_PID)"
    run_cells proton "amqp://127.0.0.1:$port" bench-q "$PROTON_PID"
    kill "$PROTON_PID"; wait "$PROTON_PID" 2>/dev/null || true; PROTON_PID=
    ;;
  rmq310|rmq40)
    if [ "$broker" = rmq310 ]; then
      [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || { log "rmq310: RabbitMQ not installed, skipped"; continue; }
      node=$RMQ_NODE; chroot_dir=; prefix=/amq/queue/
    else
      [ -d "$PEERS_DIR/trixie/usr/lib/rabbitmq" ] || { log "rmq40: no chroot at $PEERS_DIR/trixie, skipped"; continue; }
      node=$RMQ4_NODE; chroot_dir=$PEERS_DIR/trixie; prefix=/queues/
    fi
    port=$((5671 + node))
    RMQ_CHROOT=$chroot_dir timeout 180 "$PEERS/rmq-node.sh" start "$node" >&2 || { log "$broker: node failed to start, skipped"; continue; }
    if [ "$broker" = rmq310 ]; then RMQ_STARTED=1; else RMQ4_STARTED=1; fi
    pid=$(RMQ_CHROOT=$chroot_dir "$PEERS/rmq-node.sh" pid "$node")
    "$PY" "$PEERS/declare_queues.py" --port "$port" declare bench_cq:classic >&2
    run_cells "$broker" "amqp://guest:guest@127.0.0.1:$port" "${prefix}bench_cq" "$pid" \
      "$PY" "$PEERS/declare_queues.py" --port "$port" purge bench_cq
    "$PY" "$PEERS/declare_queues.py" --port "$port" delete bench_cq >/dev/null 2>&1 || true
    RMQ_CHROOT=$chroot_dir "$PEERS/rmq-node.sh" stop "$node" >&2 || true
    if [ "$broker" = rmq310 ]; then RMQ_STARTED=; else RMQ4_STARTED=; fi
    "$PEERS/rmq-node.sh" stop-epmd >/dev/null 2>&1 || true
    ;;
  *) log "unknown broker $broker"; exit 2 ;;
  esac
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2
python3 "$ROOT/bench/compare_table.py" "$OUT" | tee "$OUT/table.md"
log "results in $OUT"
