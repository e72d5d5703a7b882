#!/usr/bin/env bash
# A 3-node Sluice cluster against a RabbitMQ 4.0 quorum queue on 3 nodes, in one run (issue 9;
# not part of CI). Builds the release binaries, then, one broker after the other:
#   sluice  3 release `sluice` processes on loopback, generated TOML configs ([cluster] node_id,
#           listen, secret, [[cluster.peer]]); the queue's Raft group has all 3 nodes as
#           voters. A FRESH cluster for every run, so that runs do not depend on each other,
#           with a warm-up that declares the queue; then it waits (up to SETTLE_SECONDS) for
#           the queue's group G to be led by its preferred member, node G, where the broker
#           hands leadership a few seconds after start, so that no run sees that hand-over.
#   rmq40   RabbitMQ 4.0 (the chroot from ../shared/peers/setup-rabbitmq4-chroot.sh), nodes
#           RMQ_NODE_BASE..+2 joined into one cluster (as bench-rabbitmq-cluster.sh does), a
#           quorum queue of group size 3 declared through the first node; purged before each run.
# Producers connect to node 2 and consumers to node 3 (sluice-bench --consumer-url; the Proton
# C client's two sides are started separately by compare_cluster.py c-run). Cells, each run
# REPEAT times, medians reported; 100 B durable messages, at-least-once, window 1000,
# prefetch 1000:
#   pipe      full speed, CELL_SECONDS long (the C client sends what sluice-bench managed in
#             that time on the same broker, by the median of its runs)
#   rate5k    a fixed RATE msg/s, CELL_SECONDS long, for latency (the C client is the copy
#             patched for fixed rates, as in compare.sh)
#   failover  (sluice-bench only) FAILOVER_RATE msg/s for FAILOVER_SECONDS; after KILL_AFTER
#             seconds the queue's leader is killed with SIGKILL. The producer and the consumer
#             are on the two other nodes. Reported: time from the kill to the producer's first
#             accepted outcome after it (from sluice-bench's --stall-threshold gaps).
#             RabbitMQ's killed node is started again after each run.
# Broker CPU is read per process (/proc/PID/stat), so each node's µs/msg is reported too.
# Then prints the tables (compare_cluster.py table): every cell, then Sluice ÷ RabbitMQ.
#
# Env: REPEAT (3), CELL_SECONDS (10), RATE (5000), FAILOVER_RATE (2000), FAILOVER_SECONDS
#      (12), KILL_AFTER (4), STALL_MS (20), SIZE (100), BROKERS ("sluice rmq40"), SEED (0:
#      Sluice's `seed` for the pipe and rate5k clusters; failover run n uses seed n),
#      SETTLE_SECONDS (10),
#      RMQ_NODE_BASE (21: nodes 21-23, AMQP ports 5692-5694, clear of compare.sh's node 13 and
#      bench-rabbitmq-cluster.sh's 11-13), BUILD (1; 0 uses the binaries already in target/),
#      PEERS (../shared/peers), PEERS_DIR (~/.cache/sluice-peers), OUT (results directory,
#      default target/compare-cluster/DATE).
# Loopback only. Every process it starts is stopped on exit (trap), by PID; RabbitMQ's node
# directories for RMQ_NODE_BASE..+2 are wiped before and after.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PEERS=${PEERS:-$ROOT/../shared/peers}
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/sluice-peers}
export PEERS_DIR
PY=$PEERS_DIR/venv/bin/python
REPEAT=${REPEAT:-3}
CELL_SECONDS=${CELL_SECONDS:-10}
RATE=${RATE:-5000}
FAILOVER_RATE=${FAILOVER_RATE:-2000}
FAILOVER_SECONDS=${FAILOVER_SECONDS:-12}
KILL_AFTER=${KILL_AFTER:-4}
SEED=${SEED:-0}
SETTLE_SECONDS=${SETTLE_SECONDS:-10}
STALL_MS=${STALL_MS:-20}
SIZE=${SIZE:-100}
BROKERS=${BROKERS:-sluice rmq40}
RMQ_NODE_BASE=${RMQ_NODE_BASE:-21}
RMQ_CHROOT_DIR=$PEERS_DIR/trixie
OUT=${OUT:-$ROOT/target/compare-cluster/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
BENCH=$ROOT/target/release/sluice-bench
SLUICE=$ROOT/target/release/sluice
HELPER=$ROOT/bench/compare_cluster.py
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
COMMON=(--size "$SIZE" --window 1000 --prefetch 1000)
SECRET="compare-cluster-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

log() { echo "compare-cluster.sh: $(date -u +%T) $*" >&2; }

# --- state and cleanup ---------------------------------------------------------
declare -a SPID=() URL=() PIDS=()   # per node, 1-based: Sluice PIDs, AMQP URLs, broker PIDs
BENCH_PID='' WORK='' RMQ_STARTED='' EPMD_BEFORE=''
rmq() { RMQ_CHROOT=$RMQ_CHROOT_DIR "$PEERS/rmq-node.sh" "$@"; }
rmq_nodes() { echo "$RMQ_NODE_BASE" $((RMQ_NODE_BASE + 1)) $((RMQ_NODE_BASE + 2)); }

sluice_stop() {
  local i pid
  for i in 1 2 3; do
    pid=${SPID[i]:-}
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for i in 1 2 3; do
    pid=${SPID[i]:-}
    [ -n "$pid" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    SPID[i]=
  done
}

rmq_stop_all() {
  local i
  for i in $(rmq_nodes); do rmq stop "$i" >/dev/null 2>&1 || true; done
  for i in $(rmq_nodes); do rmq wipe "$i" || true; done
  # The epmd that our starts launched (rmq-node.sh records it): only ours, only if it is
  # still an epmd, and only once no other RabbitMQ node could be using it.
  # Our entries then leave the record, so that no later stop-epmd kills a reused PID.
  local f=$RMQ_CHROOT_DIR/peers/rmq/epmd.pids p keep=''
  if [ -f "$f" ] && ! ps -eo comm= | grep -qx beam.smp; then
    for p in $(sort -u "$f"); do
      case " $EPMD_BEFORE " in *" $p "*) keep="$keep$p"$'\n'; continue ;; esac
      if [ "$(ps -o comm= -p "$p" 2>/dev/null)" = epmd ]; then kill "$p" 2>/dev/null || true; fi
    done
    if [ -n "$keep" ]; then printf '%s' "$keep" > "$f"; else rm -f "$f"; fi
  fi
}

cleanup() {
  set +e
  [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null
  sluice_stop
  [ -n "$RMQ_STARTED" ] && rmq_stop_all
  [ -n "$WORK" ] && rm -rf "$WORK"
  BENCH_PID='' RMQ_STARTED='' WORK=''
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command in the background and waits for it, so that a signal to this script is
# handled at once (bash delays traps until a foreground command ends); cleanup stops it.
bg_wait() {
  "$@" &
  BENCH_PID=$!
  local rc=0
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=''
  return "$rc"
}

# Free loopback ports, all held at once so that they differ.
free_ports() {
  python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in held])' "$1"
}

unix_ms() {  # $EPOCHREALTIME (s.us) -> ms with 3 decimals
  local us=${1/./}
  printf '%d.%03d' $((10#$us / 1000)) $((10#$us % 1000))
}

# --- build -------------------------------------------------------------------------
if [ "${BUILD:-1}" = 1 ]; then
  log "building release binaries"
  # Both binaries by name: `--bin sluice` alone would leave sluice-bench out.
  cargo build --release --quiet -p sluice -p sluice-bench --bin sluice --bin sluice-bench
fi
[ -x "$SLUICE" ] && [ -x "$BENCH" ] || { log "no $SLUICE or $BENCH: build them (BUILD=1)"; exit 1; }
"$BENCH" --help | grep -q -- --consumer-url \
  || { log "$BENCH has no --consumer-url: it is older than this script, rebuild it"; exit 1; }
[ -x "$PY" ] || { log "no $PY: run $PEERS/setup.sh"; exit 1; }
[ -x "$PEERS_DIR/amqp_perf" ] || { log "no $PEERS_DIR/amqp_perf: run $PEERS/setup.sh"; exit 1; }
WORK=$(mktemp -d)

# The C client for fixed rates: the same one-line patch as compare.sh (see its header).
RATE_CLIENT=$PEERS_DIR/amqp_perf
patched=$ROOT/target/compare-cluster/amqp_perf_rate
mkdir -p "$(dirname "$patched")"
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

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
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
  if git -C "$ROOT" rev-parse --short HEAD >/dev/null 2>&1; then
    echo "sluice: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+dirty')"
  else
    echo "sluice: ${SLUICE_REV:-unknown (not a git checkout)}"
  fi
  echo "SEED=$SEED REPEAT=$REPEAT CELL_SECONDS=$CELL_SECONDS RATE=$RATE FAILOVER_RATE=$FAILOVER_RATE FAILOVER_SECONDS=$FAILOVER_SECONDS KILL_AFTER=$KILL_AFTER STALL_MS=$STALL_MS SIZE=$SIZE"
  echo "clients: producer -> node 2, consumer -> node 3 (failover: the two nodes that do not lead the queue)"
} | tee "$OUT/machine.txt" >&2

# --- Sluice cluster ----------------------------------------------------------------------
SQUEUE=bench-q
SLOG_LEVEL=warn,sluice::raft::group=info,sluice::node::cluster=info,sluice::server=info

# Starts a fresh 3-node cluster under $WORK/sluice with `seed = $1` (which fixes the Raft
# election timeouts, so which node leads the queue and how long an election takes), waits
# for every node to be ready, and sends a few messages through node 2 to node 3 (which
# declares the queue).
SLUICE_SEED=0
sluice_start() {
  local dir=$WORK/sluice i j ports
  sluice_stop   # none should be left, but never two clusters at once
  SLUICE_SEED=${1:-0}
  rm -rf "$dir"; mkdir -p "$dir"
  read -r -a ports <<< "$(free_ports 6)"   # 3 AMQP, then 3 cluster
  for i in 1 2 3; do
    {
      echo "listen = \"127.0.0.1:${ports[i - 1]}\""
      echo "data_dir = \"$dir/d$i\""
      echo "seed = $SLUICE_SEED"
      echo "[cluster]"
      echo "node_id = $i"
      echo "listen = \"127.0.0.1:${ports[i + 2]}\""
      echo "secret = \"$SECRET\""
      for j in 1 2 3; do
        [ "$j" = "$i" ] && continue
        printf '[[cluster.peer]]\nid = %d\naddress = "127.0.0.1:%d"\n' "$j" "${ports[j + 2]}"
      done
    } > "$dir/n$i.toml"
    chmod 600 "$dir/n$i.toml"
    "$SLUICE" --config "$dir/n$i.toml" --log-level "$SLOG_LEVEL" > "$dir/log$i" 2>&1 &
    SPID[i]=$!
    URL[i]=amqp://127.0.0.1:${ports[i - 1]}
    PIDS[i]=${SPID[i]}
  done
  for i in 1 2 3; do
    for _ in $(seq 1 100); do grep -q 'sluice ready' "$dir/log$i" && break; sleep 0.1; done
    grep -q 'sluice ready' "$dir/log$i" \
      || { log "sluice node $i did not start:"; cat "$dir/log$i" >&2; sluice_stop; return 1; }
  done
  bg_wait timeout 60 "$BENCH" --url "${URL[2]}" --consumer-url "${URL[3]}" --address "$SQUEUE" --count 200 \
    "${COMMON[@]}" --json --quiet > "$dir/warmup.json" \
    || { log "sluice warm-up failed"; tail -n 5 "$dir"/log* >&2; sluice_stop; return 1; }
  # Leadership settles on the group's preferred member: voters 1..3 in order, group G -> node
  # ((G - 1) mod 3) + 1 (broker/src/raft/group.rs, preferred_leader).
  local group want leader deadline=$((SECONDS + SETTLE_SECONDS))
  group=$(sluice_group)
  want=$(( (group - 1) % 3 + 1 ))
  while :; do
    leader=$(sluice_leader 1 2 3)
    [ "$leader" = "$want" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "sluice: group $group is led by n$leader, not n$want, after ${SETTLE_SECONDS}s; going on"
      break
    fi
    sleep 0.5
  done
}

# The queue's Raft group, from the node that declared it.
sluice_group() {
  grep -ho "declaring a queue queue=\"$SQUEUE\" group=[0-9]*" "$WORK/sluice"/log? | head -1 | sed 's/.*group=//'
}

# The node that leads the queue's group, once every live node agrees (node numbers in $@).
sluice_leader() {
  local dir=$WORK/sluice group i view first
  group=$(sluice_group)
  [ -n "$group" ] || { echo "?"; return; }
  for _ in $(seq 1 150); do
    first=
    for i in "$@"; do
      view=$(grep -E "group (leader known|has no leader) group=$group( |$)" "$dir/log$i" | tail -1 \
        | sed -n 's/.*leader=\([0-9]*\).*/\1/p')
      [ -n "$view" ] || { first=; break; }
      if [ -z "$first" ]; then first=$view
      elif [ "$first" != "$view" ]; then first=; break; fi
    done
    [ -n "$first" ] && { echo "$first"; return; }
    sleep 0.1
  done
  echo "?"
}

# --- RabbitMQ cluster --------------------------------------------------------------------
RQUEUE=qq3c
rmq_start() {
  local nodes i
  read -r -a nodes <<< "$(rmq_nodes)"
  for i in "${nodes[@]}"; do
    local p
    p=$(rmq pid "$i" 2>/dev/null || true)
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      log "rmq40: node $i is already running (pid $p), someone else's? skipped"; return 1
    fi
    if (exec 3<>/dev/tcp/127.0.0.1/$((5671 + i))) 2>/dev/null; then
      log "rmq40: port $((5671 + i)) is taken, skipped"; return 1
    fi
  done
  EPMD_BEFORE=$(cat "$RMQ_CHROOT_DIR/peers/rmq/epmd.pids" 2>/dev/null | tr '\n' ' ' || true)
  RMQ_STARTED=1
  for i in "${nodes[@]}"; do rmq wipe "$i"; done
  for i in "${nodes[@]}"; do
    timeout 180 env RMQ_CHROOT="$RMQ_CHROOT_DIR" "$PEERS/rmq-node.sh" start "$i" >&2 || return 1
  done
  for i in "${nodes[@]:1}"; do
    rmq ctl "$i" -q stop_app && rmq ctl "$i" -q reset && rmq ctl "$i" -q join_cluster "rabbit${nodes[0]}@localhost" \
      && rmq ctl "$i" -q start_app || return 1
  done
  "$PY" "$PEERS/declare_queues.py" --port $((5671 + nodes[0])) declare "$RQUEUE:quorum:3" >&2
  for i in 1 2 3; do
    URL[i]=amqp://guest:guest@127.0.0.1:$((5671 + nodes[i - 1]))
    PIDS[i]=$(rmq pid "${nodes[i - 1]}")
  done
  rmq_wait_online
}

# 1..3: the quorum queue's leader, as node 1 of ours sees it (any live node is asked).
rmq_leader() {
  local nodes i leader
  read -r -a nodes <<< "$(rmq_nodes)"
  for i in "${nodes[@]}"; do
    kill -0 "$(rmq pid "$i")" 2>/dev/null || continue
    leader=$(rmq ctl "$i" -q list_queues name leader --formatter json 2>/dev/null \
      | python3 -c 'import json,sys; q=[x for x in json.load(sys.stdin) if x["name"]==sys.argv[1]]; print(q[0]["leader"] if q else "")' "$RQUEUE" 2>/dev/null || true)
    leader=${leader#rabbit}; leader=${leader%@localhost}
    [ -n "$leader" ] && { echo $((leader - RMQ_NODE_BASE + 1)); return; }
  done
  echo "?"
}

# Waits until all 3 members of the queue are online.
rmq_wait_online() {
  for _ in $(seq 1 120); do
    if rmq ctl "$RMQ_NODE_BASE" -q list_queues name online --formatter json 2>/dev/null \
      | python3 -c 'import json,sys; q=[x for x in json.load(sys.stdin) if x["name"]==sys.argv[1]]; sys.exit(0 if q and len(q[0]["online"])==3 else 1)' "$RQUEUE" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  log "rmq40: the queue's members are not all online"
  return 1
}

rmq_purge() { "$PY" "$PEERS/declare_queues.py" --port $((5671 + RMQ_NODE_BASE)) purge "$RQUEUE" >/dev/null 2>&1 || true; }

# --- cells -------------------------------------------------------------------------------
# Before and after each run, per broker.
before_run() {  # broker, seed (Sluice)
  case "$1" in
  sluice) sluice_start "${2:-$SEED}" ;;
  rmq40) rmq_purge ;;
  esac
}
after_run() {  # broker, meta file, leader (if known before)
  local leader=$3 i rss=()
  for i in 1 2 3; do
    rss+=("$(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/${PIDS[i]}/status" 2>/dev/null || echo null)")
  done
  local seed=null
  case "$1" in
  sluice) leader=$(sluice_leader 1 2 3); seed=$SLUICE_SEED; sluice_stop ;;
  esac
  printf '{"leader": "%s", "producer": 2, "consumer": 3, "rss_mb": [%s, %s, %s], "seed": %s}\n' \
    "$leader" "${rss[0]:-null}" "${rss[1]:-null}" "${rss[2]:-null}" "$seed" > "$2"
}

address_of() { case "$1" in sluice) echo "$SQUEUE" ;; rmq40) echo "/queues/$RQUEUE" ;; esac; }

run_sb() {  # broker, workload, run, extra args...
  local b=$1 w=$2 n=$3; shift 3
  local f=$OUT/$b.sb.$w.$n.json leader=
  before_run "$b" || { log "$b: could not prepare run $n of sb $w"; return 0; }
  [ "$b" = rmq40 ] && leader=$(rmq_leader)
  log "$b: sluice-bench $w, run $n/$REPEAT"
  bg_wait timeout "$RUN_TIMEOUT" "$BENCH" --url "${URL[2]}" --consumer-url "${URL[3]}" --address "$(address_of "$b")" \
    "${COMMON[@]}" --broker-pid "${PIDS[1]}" --broker-pid "${PIDS[2]}" --broker-pid "${PIDS[3]}" \
    --label "$b" --json --quiet "$@" > "$f" || log "$b: sluice-bench $w run $n failed"
  after_run "$b" "${f%.json}.meta.json" "$leader"
}

run_c() {  # broker, workload, run, client binary, extra args...
  local b=$1 w=$2 n=$3 bin=$4; shift 4
  local f=$OUT/$b.c.$w.$n.json leader=
  before_run "$b" || { log "$b: could not prepare run $n of c $w"; return 0; }
  [ "$b" = rmq40 ] && leader=$(rmq_leader)
  log "$b: Proton C $w, run $n/$REPEAT"
  bg_wait timeout "$RUN_TIMEOUT" "$PY" "$HELPER" c-run --c-bin "$bin" --send-url "${URL[2]}" --recv-url "${URL[3]}" \
    --address "$(address_of "$b")" "${COMMON[@]}" --broker-pid "${PIDS[1]}" --broker-pid "${PIDS[2]}" \
    --broker-pid "${PIDS[3]}" --label "$b" "$@" > "$f" || log "$b: Proton C $w run $n failed"
  after_run "$b" "${f%.json}.meta.json" "$leader"
}

run_failover() {  # broker, run
  local b=$1 n=$2 f=$OUT/$1.sb.failover.$2.json leader p c others=() t i
  # Sluice: seed n for run n, so that the runs sample different election timeouts.
  before_run "$b" "$n" || { log "$b: could not prepare failover run $n"; return 0; }
  case "$b" in
  sluice) leader=$(sluice_leader 1 2 3) ;;
  rmq40) rmq_wait_online || true; leader=$(rmq_leader) ;;
  esac
  case "$leader" in 1|2|3) ;; *) log "$b: no leader found for failover run $n"; after_run "$b" /dev/null "?"; return 0 ;; esac
  for i in 1 2 3; do [ "$i" = "$leader" ] || others+=("$i"); done
  p=${others[0]} c=${others[1]}
  log "$b: failover run $n/$REPEAT: leader n$leader, producer -> n$p, consumer -> n$c, kill after ${KILL_AFTER}s"
  timeout "$RUN_TIMEOUT" "$BENCH" --url "${URL[p]}" --consumer-url "${URL[c]}" --address "$(address_of "$b")" \
    "${COMMON[@]}" --rate "$FAILOVER_RATE" --duration "${FAILOVER_SECONDS}s" --drain-timeout 10s \
    --stall-threshold "${STALL_MS}ms" --label "$b" --json --quiet > "$f" &
  BENCH_PID=$!
  sleep "$KILL_AFTER"
  t=$EPOCHREALTIME
  kill -9 "${PIDS[leader]}"
  # Reaped at once and quietly (a Sluice node is our child; RabbitMQ's is not).
  wait "${PIDS[leader]}" 2>/dev/null || true
  log "$b: killed the leader, n$leader (pid ${PIDS[leader]})"
  printf '{"kill_unix_ms": %s, "killed": %s, "leader": %s, "producer": %s, "consumer": %s, "stall_threshold_ms": %s}\n' \
    "$(unix_ms "$t")" "$leader" "$leader" "$p" "$c" "$STALL_MS" > "${f%.json}.kill.json"
  wait "$BENCH_PID" || log "$b: failover run $n: sluice-bench failed"
  BENCH_PID=
  case "$b" in
  sluice)
    printf '{"leader": "%s", "killed": %s, "producer": %s, "consumer": %s, "new_leader": "%s", "seed": %s}\n' \
      "$leader" "$leader" "$p" "$c" "$(sluice_leader "${others[@]}")" "$SLUICE_SEED" > "${f%.json}.meta.json"
    sluice_stop ;;
  rmq40)
    printf '{"leader": "%s", "killed": %s, "producer": %s, "consumer": %s, "new_leader": "%s"}\n' \
      "$leader" "$leader" "$p" "$c" "$(rmq_leader)" > "${f%.json}.meta.json"
    local node=$((RMQ_NODE_BASE + leader - 1))
    timeout 180 env RMQ_CHROOT="$RMQ_CHROOT_DIR" "$PEERS/rmq-node.sh" start "$node" >&2 \
      || log "rmq40: node $node did not start again"
    PIDS[leader]=$(rmq pid "$node")
    rmq_wait_online || true ;;
  esac
  log "$b: failover run $n: $("$PY" "$HELPER" failover "$f" "${f%.json}.kill.json" 2>/dev/null || echo '?')"
}

# Median of the sluice-bench pipe cell's receive rate, for the C client's message count.
pipe_count() {
  python3 - "$OUT" "$1" "$CELL_SECONDS" <<'COUNT'
import glob, json, statistics, sys
out, b, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
rates = []
for p in glob.glob(f"{out}/{b}.sb.pipe.[0-9]*.json"):
    if p.endswith(".meta.json"):
        continue
    try:
        rates.append(json.load(open(p))["recv_msg_s"])
    except (OSError, ValueError, KeyError):
        pass
rate = statistics.median(rates) if rates else 20000
print(int(min(max(rate * secs, 20000), 2000000)))
COUNT
}

for broker in $BROKERS; do
  case "$broker" in
  sluice) ;;
  rmq40)
    [ -d "$RMQ_CHROOT_DIR/usr/lib/rabbitmq" ] || { log "rmq40: no chroot at $RMQ_CHROOT_DIR, skipped"; continue; }
    log "rmq40: forming the cluster (nodes $(rmq_nodes))"
    rmq_start || { log "rmq40: the cluster did not form, skipped"; rmq_stop_all; RMQ_STARTED=; continue; }
    log "rmq40: cluster up, pids ${PIDS[*]:1}, queue $RQUEUE leader n$(rmq_leader)"
    ;;
  *) log "unknown broker $broker"; exit 2 ;;
  esac
  for n in $(seq 1 "$REPEAT"); do run_sb "$broker" pipe "$n" --duration "${CELL_SECONDS}s"; done
  count=$(pipe_count "$broker")
  for n in $(seq 1 "$REPEAT"); do run_c "$broker" pipe "$n" "$PEERS_DIR/amqp_perf" -n "$count"; done
  for n in $(seq 1 "$REPEAT"); do run_sb "$broker" rate5k "$n" --rate "$RATE" --duration "${CELL_SECONDS}s"; done
  for n in $(seq 1 "$REPEAT"); do
    run_c "$broker" rate5k "$n" "$RATE_CLIENT" -n $((RATE * CELL_SECONDS)) --rate "$RATE"
  done
  for n in $(seq 1 "$REPEAT"); do run_failover "$broker" "$n"; done
  if [ "$broker" = rmq40 ]; then rmq_stop_all; RMQ_STARTED=; fi
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2
python3 "$HELPER" table "$OUT" | tee "$OUT/table.md"
log "results in $OUT"
