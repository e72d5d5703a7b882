#!/usr/bin/env bash
# Issue 16 item 7 side by side (not part of CI): Sluice, RabbitMQ 4.0 classic
# queues and RabbitMQ 4.0 quorum queues, one broker at a time, each fresh:
#   (a) backlog: PRODUCERS producers fill one queue with COUNT_A x SIZE
#       durable messages while nobody consumes, then one consumer drains it
#       (given the fill's run id, it counts every message back);
#   (b) queues: QUEUES queues, producer i and consumer i on queue i
#       (`sluice-bench --queues`), the 2 x QUEUES links spread over
#       CONNECTIONS_B connections, for SECONDS_B seconds; each producer keeps
#       at most WINDOW sends unsettled, each consumer grants WINDOW credit;
#   (c) fan-out, Sluice only: one producer publishes RATE_C msg/s for
#       SECONDS_C seconds to `topic://fanout`, to which SUBSCRIBERS consumers
#       subscribed first, each on its own connection (`sluice-bench
#       --fanout`). Paced, because unpaced (a window of 1,000 publishes, a
#       million copies) the subscriptions page and the broker ran out of
#       file descriptors (see docs/performance.md).
# The broker's RSS is sampled every second into OUT/BROKER/rss.csv (with the
# phase), its CPU measured by `sluice-bench --broker-pid`. OUT/table.md gets
# each figure per broker and Sluice's ratio to each RabbitMQ.
#
# RabbitMQ 4.0.5 comes from ../shared/peers (run setup-rabbitmq4-chroot.sh
# once, and make PEERS_DIR/venv with pika for declare_queues.py: see its
# README) as node RMQ_NODE, wiped before and after each broker. Its queues are
# declared over AMQP 0-9-1 before each phase and addressed /queues/NAME. Its
# memory watermark stays at its default (0.6 of the RAM); Sluice's is
# WATERMARK.
#
# Env: BROKERS ("sluice rabbitmq-classic rabbitmq-quorum"), COUNT_A (1000000),
#      PRODUCERS (4), SIZE (1024), QUEUES (1000), CONNECTIONS_B (100),
#      SECONDS_B (20), WINDOW (50), SUBSCRIBERS (1000), RATE_C (50),
#      SECONDS_C (20),
#      WATERMARK (268435456), RMQ_NODE (11: AMQP port 5682), BUILD (1),
#      PEERS (../shared/peers), PEERS_DIR (~/.cache/sluice-peers),
#      OUT (target/issue16/DATE).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. bench/lib.sh
BROKERS=${BROKERS:-sluice rabbitmq-classic rabbitmq-quorum}
COUNT_A=${COUNT_A:-1000000}
PRODUCERS=${PRODUCERS:-4}
SIZE=${SIZE:-1024}
QUEUES=${QUEUES:-1000}
CONNECTIONS_B=${CONNECTIONS_B:-100}
SECONDS_B=${SECONDS_B:-20}
WINDOW=${WINDOW:-50}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE_C=${RATE_C:-50}
SECONDS_C=${SECONDS_C:-20}
WATERMARK=${WATERMARK:-268435456}
RMQ_NODE=${RMQ_NODE:-11}
PEERS=${PEERS:-$ROOT/../shared/peers}
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/sluice-peers}
export PEERS_DIR
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/issue16/$(date -u +%Y%m%dT%H%M%SZ)}
SLUICE=$TARGET/release/sluice
BENCH=$TARGET/release/sluice-bench
RUN_ID=16
mkdir -p "$OUT"
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet -p sluice -p sluice-bench --bin sluice --bin sluice-bench
fi
# (c) holds a connection per subscriber, client and broker side.
ulimit -n "$(ulimit -Hn)"

rmq() { RMQ_CHROOT=$PEERS_DIR/trixie "$PEERS/rmq-node.sh" "$@"; }

PID='' SAMPLER='' RMQ_UP='' DIR='' URL='' BPID='' PREFIX='' KIND=''
stop_broker() {
  local p
  for p in $SAMPLER $PID; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -n "$RMQ_UP" ]; then
    rmq stop "$RMQ_NODE" > /dev/null 2>&1 || true
    rmq wipe "$RMQ_NODE"
  fi
  [ -n "$DIR" ] && rm -rf "$DIR/data"
  SAMPLER='' PID='' RMQ_UP=''
  return 0
}
trap stop_broker EXIT

phase() { echo "$1" > "$DIR/phase"; }

# start_broker NAME: a fresh broker; sets URL, BPID (its pid), PREFIX (what
# goes before a queue's name in an address) and KIND (the RabbitMQ queue type).
start_broker() {
  DIR=$OUT/$1
  mkdir -p "$DIR"
  case $1 in
    sluice)
      cat > "$DIR/sluice.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$DIR/data"
[limits]
memory_high_watermark_bytes = $WATERMARK
EOF
      "$SLUICE" --config "$DIR/sluice.toml" --log-level warn,sluice::server=info \
        > "$DIR/broker.log" 2>&1 &
      PID=$! BPID=$!
      URL=amqp://$(wait_ready "$DIR/broker.log") PREFIX='' KIND=''
      ;;
    rabbitmq-classic | rabbitmq-quorum)
      rmq stop "$RMQ_NODE" > /dev/null 2>&1 || true
      rmq wipe "$RMQ_NODE"
      RMQ_UP=1
      rmq start "$RMQ_NODE" > "$DIR/broker.log"
      BPID=$(rmq pid "$RMQ_NODE")
      URL=amqp://guest:guest@127.0.0.1:$((5671 + RMQ_NODE)) PREFIX=/queues/ KIND=${1#rabbitmq-}
      ;;
    *) echo "unknown broker $1" >&2; return 1 ;;
  esac
  echo "$BPID" > "$DIR/pid"
  phase start
  sample_rss "$DIR" &
  SAMPLER=$!
}

# declare NAME...: RabbitMQ's /queues/NAME must exist first; Sluice makes a
# queue on its first attach.
declare() {
  [ -z "$KIND" ] && return
  "$PEERS_DIR/venv/bin/python" "$PEERS/declare_queues.py" --port $((5671 + RMQ_NODE)) \
    declare "${@/%/:$KIND}" > /dev/null
}

# bench PHASE ARGS...: one sluice-bench run, its report in DIR/PHASE.json.
bench() {
  local name=$1
  shift
  phase "$name"
  "$BENCH" --url "$URL" --broker-pid "$BPID" --size "$SIZE" --json --quiet "$@" \
    > "$DIR/$name.json"
}

backlog() {
  declare backlog
  bench fill --address "${PREFIX}backlog" --producers "$PRODUCERS" --consumers 0 \
    --count "$COUNT_A" --run-id "$RUN_ID"
  bench drain --address "${PREFIX}backlog" --producers 0 --consumers 1 \
    --count "$COUNT_A" --run-id "$RUN_ID"
}

many_queues() {
  phase declare
  declare $(seq -f 'q-%g' 0 $((QUEUES - 1)))
  bench queues --address "${PREFIX}q-{}" --queues "$QUEUES" --producers "$QUEUES" \
    --consumers "$QUEUES" --connections "$CONNECTIONS_B" --duration "${SECONDS_B}s" \
    --window "$WINDOW" --prefetch "$WINDOW"
}

fanout() {
  bench fanout --address topic://fanout --fanout --producers 1 \
    --consumers "$SUBSCRIBERS" --rate "$RATE_C" --duration "${SECONDS_C}s"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "sluice: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "COUNT_A=$COUNT_A PRODUCERS=$PRODUCERS SIZE=$SIZE QUEUES=$QUEUES" \
    "CONNECTIONS_B=$CONNECTIONS_B SECONDS_B=$SECONDS_B WINDOW=$WINDOW" \
    "SUBSCRIBERS=$SUBSCRIBERS RATE_C=$RATE_C SECONDS_C=$SECONDS_C WATERMARK=$WATERMARK"
} | tee "$OUT/machine.txt" >&2

for broker in $BROKERS; do
  echo "$broker: load before $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2
  start_broker "$broker"
  backlog
  many_queues
  [ "$broker" = sluice ] && fanout
  phase done
  sleep 1
  stop_broker
  echo "$broker: load after $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2
done

python3 bench/issue16_table.py "$OUT" "$COUNT_A" $BROKERS | tee "$OUT/table.md"
