#!/usr/bin/env bash
# Throughput over TLS against plain AMQP, one run, Proton C client, Sluice and
# RabbitMQ 4.0 (issue 15; not part of CI).
#
#   bench/tls.sh
#
# Builds a TLS-capable copy of the peers' Proton C client (../shared/peers/
# amqp_perf.c, patched here at build time, as compare-cluster.sh patches it
# for fixed rates): `--ca FILE` sets up a client pn_ssl_domain that trusts
# FILE and verifies the broker's name (PN_SSL_VERIFY_PEER_NAME), `--peer-name
# NAME` the name to verify (default: --host; the client connects to
# 127.0.0.1 and checks `localhost`, since Proton matches DNS names only).
# Makes a throwaway CA and broker certificate with openssl (as
# docs/security.md shows). Then, ROUNDS times, for each SIZE: a FRESH release
# `sluice` (no accounts: SASL ANONYMOUS either way) with `--listen-tls`, and
# the same workload over the plain port and over the TLS port, alternating
# which goes first from round to round: N durable messages, pipe (receiver
# attached first, then the sender, as amqp_bench.py does), window 1000,
# prefetch 1000. Reports per run the receive rate, latency, broker CPU per
# message and the clients' CPU, then per broker the medians and TLS ÷ plain.
#
# With RABBITMQ=1 (the default when ../shared/peers/setup-rabbitmq4-chroot.sh
# has made its chroot), each round also runs the same pair against RabbitMQ
# 4.0, right after Sluice's and in the same order: one node (rmq-node.sh with
# RMQ_CHROOT, node RMQ_NODE) for the whole run, whose rabbitmq.conf this script
# writes before the start: the plain listener and listeners.ssl.default with
# the same CA and broker certificate (copied under the node's directory, the
# only place the chroot can read them), verify_none since the client has no
# certificate. The client logs in as guest/guest (PLAIN, which RabbitMQ allows
# from loopback only) to /queues/tls-bench, a durable quorum queue (a replica
# set of one: it fsyncs before it confirms, as Sluice does before it accepts)
# declared as declare_queues.py does and purged before every run. The idle
# node stays up during Sluice's runs.
#
# Env: ROUNDS (5), N (100000), SIZES ("100 1024"), BUILD (1), PEERS
#      (../shared/peers), PEERS_DIR (~/.cache/sluice-peers), OUT (default
#      target/tls/DATE), RABBITMQ (1 if the chroot exists, else 0), RMQ_NODE
#      (14: AMQP port 5685; clear of compare.sh's 13, compare-cluster.sh's
#      21-23 and bench-rabbitmq-cluster.sh's 11-13), RMQ_TLS_PORT (100 above the
#      AMQP port).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. bench/lib.sh
PEERS=${PEERS:-$ROOT/../shared/peers}
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/sluice-peers}
PY=$PEERS_DIR/venv/bin/python
ROUNDS=${ROUNDS:-5}
N=${N:-100000}
SIZES=${SIZES:-100 1024}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/tls/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SLUICE=$TARGET/release/sluice
[ -x "$PY" ] || { echo "no $PY: run $PEERS/setup.sh" >&2; exit 1; }
RMQ_CHROOT_DIR=$PEERS_DIR/trixie
if [ -d "$RMQ_CHROOT_DIR/usr/lib/rabbitmq" ]; then RABBITMQ=${RABBITMQ:-1}; else RABBITMQ=${RABBITMQ:-0}; fi
if [ "$RABBITMQ" = 1 ]; then
  [ -d "$RMQ_CHROOT_DIR/usr/lib/rabbitmq" ] && mountpoint -q "$RMQ_CHROOT_DIR/proc" \
    || { echo "no RabbitMQ 4.0 in $RMQ_CHROOT_DIR, or its /proc is not mounted: run $PEERS/setup-rabbitmq4-chroot.sh" >&2; exit 1; }
  BROKERS="sluice rmq40"
else
  BROKERS=sluice
fi
RMQ_NODE=${RMQ_NODE:-14}
RMQ_PORT=$((5671 + RMQ_NODE))
RMQ_TLS_PORT=${RMQ_TLS_PORT:-$((RMQ_PORT + 100))}
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet -p sluice --bin sluice
fi

PID='' RMQ_STARTED=''
rmq() { RMQ_CHROOT=$RMQ_CHROOT_DIR "$PEERS/rmq-node.sh" "$@"; }
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  if [ -n "$RMQ_STARTED" ]; then
    rmq stop "$RMQ_NODE" >/dev/null 2>&1
    rmq wipe "$RMQ_NODE"
    # The epmd our start launched serves every node: end it only once no node is left.
    ps -eo comm= | grep -qx beam.smp || rmq stop-epmd >/dev/null 2>&1
  fi
  wait 2>/dev/null || true
}
trap cleanup EXIT

# --- the client: amqp_perf.c with --ca and --peer-name ----------------------------
CLIENT=$OUT/amqp_perf_tls
python3 - "$PEERS/amqp_perf.c" "$OUT/amqp_perf_tls.c" <<'PATCH'
import sys
src = open(sys.argv[1]).read()
def patch(old, new):
    global src
    if src.count(old) != 1:
        sys.exit(f"amqp_perf.c changed: the TLS patch does not apply at {old.strip()!r}")
    src = src.replace(old, new)
patch("#include <proton/session.h>\n",
      "#include <proton/session.h>\n#include <proton/ssl.h>\n")
patch("static uint64_t now_ns(void) {\n",
      "static const char *tls_ca, *tls_peer_name;\n\nstatic uint64_t now_ns(void) {\n")
patch('    else if (!strcmp(k, "--non-durable")) a.durable = false;\n',
      '    else if (!strcmp(k, "--non-durable")) a.durable = false;\n'
      '    else if (!strcmp(k, "--ca")) tls_ca = ARG;\n'
      '    else if (!strcmp(k, "--peer-name")) tls_peer_name = ARG;\n')
patch("  pn_sasl_set_allow_insecure_mechs(sasl, true);\n",
      "  pn_sasl_set_allow_insecure_mechs(sasl, true);\n"
      "  if (tls_ca) {\n"
      "    pn_ssl_domain_t *dom = pn_ssl_domain(PN_SSL_MODE_CLIENT);\n"
      "    pn_ssl_t *ssl = pn_ssl(t);\n"
      "    if (!dom || !ssl || pn_ssl_domain_set_trusted_ca_db(dom, tls_ca)\n"
      "        || pn_ssl_domain_set_peer_authentication(dom, PN_SSL_VERIFY_PEER_NAME, NULL)\n"
      "        || pn_ssl_init(ssl, dom, NULL)\n"
      "        || pn_ssl_set_peer_hostname(ssl, tls_peer_name ? tls_peer_name : a.host)) {\n"
      "      fprintf(stderr, \"TLS set-up failed (CA %s)\\n\", tls_ca);\n"
      "      return 2;\n"
      "    }\n"
      "    pn_ssl_domain_free(dom);\n"
      "  }\n")
open(sys.argv[2], "w").write(src)
PATCH
gcc -O2 -Wall -o "$CLIENT" "$OUT/amqp_perf_tls.c" -lqpid-proton -lm

# --- a throwaway CA and the broker's certificate ------------------------------------
PKI=$OUT/pki
mkdir -p "$PKI"
(
  cd "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj "/CN=sluice bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout broker.key -out broker.csr -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > broker.ext
  openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out broker.pem -days 2 -extfile broker.ext 2>/dev/null
)
# The client must refuse a broker it cannot verify, or the TLS runs prove nothing.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$PKI/other.key" -out "$PKI/other.pem" -days 2 -subj "/CN=other CA" 2>/dev/null

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "sluice: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')$(
    [ "${BUILD:-1}" = 1 ] || echo " (BUILD=0: $SLUICE as found, built $(date -u -r "$SLUICE" +%FT%TZ))")"
  if [ "$RABBITMQ" = 1 ]; then
    echo "rabbitmq: $(chroot "$RMQ_CHROOT_DIR" dpkg-query -W -f='${Package} ${Version}\n' rabbitmq-server erlang-base | paste -sd' ')"
  fi
  echo "openssl (client side): $(openssl version)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ROUNDS=$ROUNDS N=$N SIZES=\"$SIZES\" BROKERS=\"$BROKERS\""
} | tee "$OUT/machine.txt" >&2

# sluice_start and rmq_select set PLAIN_URL, TLS_URL, ADDRESS and BPID (the process whose CPU counts).

# sluice_start DIR: a fresh Sluice with both listeners; sets PID too.
sluice_start() {
  local dir=$1 line
  mkdir -p "$dir"
  cat > "$dir/sluice.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$dir/data"
[tls]
cert_file = "$PKI/broker.pem"
key_file = "$PKI/broker.key"
EOF
  "$SLUICE" --config "$dir/sluice.toml" --listen-tls 127.0.0.1:0 \
    --log-level warn,sluice::server=info >"$dir/sluice.log" 2>&1 &
  PID=$!
  wait_ready "$dir/sluice.log" >/dev/null
  line=$(grep -m1 'sluice ready' "$dir/sluice.log")
  PLAIN_URL=amqp://127.0.0.1:$(sed -n 's/.* amqp=[0-9.]*:\([0-9]*\).*/\1/p' <<<"$line")
  TLS_URL=amqp://127.0.0.1:$(sed -n 's/.* amqps=[0-9.]*:\([0-9]*\).*/\1/p' <<<"$line")
  ADDRESS=tls-bench BPID=$PID
}

sluice_stop() {
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

# rmq_start: RabbitMQ's node for the whole run, with a rabbitmq.conf of this run, and its queue.
rmq_start() {
  local host_dir=$RMQ_CHROOT_DIR/peers/rmq/n$RMQ_NODE node_dir=/peers/rmq/n$RMQ_NODE port
  for port in "$RMQ_PORT" "$RMQ_TLS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "tls.sh: port $port is taken (someone else's node?): set RMQ_NODE" >&2; exit 1
    fi
  done
  RMQ_STARTED=1
  rmq wipe "$RMQ_NODE"
  mkdir -p "$host_dir/pki"
  cp "$PKI/ca.pem" "$PKI/broker.pem" "$PKI/broker.key" "$host_dir/pki/"
  cat > "$host_dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$RMQ_PORT
listeners.ssl.default = 127.0.0.1:$RMQ_TLS_PORT
ssl_options.cacertfile = $node_dir/pki/ca.pem
ssl_options.certfile = $node_dir/pki/broker.pem
ssl_options.keyfile = $node_dir/pki/broker.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
log.file.level = warning
log.console = false
EOF
  cp "$host_dir/rabbitmq.conf" "$OUT/"
  timeout 180 env RMQ_CHROOT="$RMQ_CHROOT_DIR" "$PEERS/rmq-node.sh" start "$RMQ_NODE" >&2
  RMQ_PID=$(rmq pid "$RMQ_NODE")
  "$PY" "$PEERS/declare_queues.py" --port "$RMQ_PORT" declare tls-bench:quorum >&2
}

# rmq_select: RabbitMQ's endpoints, its queue emptied for the next run.
rmq_select() {
  PLAIN_URL=amqp://guest:guest@127.0.0.1:$RMQ_PORT TLS_URL=amqp://guest:guest@127.0.0.1:$RMQ_TLS_PORT
  ADDRESS=/queues/tls-bench BPID=$RMQ_PID
  "$PY" "$PEERS/declare_queues.py" --port "$RMQ_PORT" purge tls-bench >/dev/null
}

# c_run FILE SIZE URL N [CLIENT ARGS...]: one pipe run of the patched client.
c_run() {
  local f=$1 size=$2 url=$3 n=$4; shift 4
  "$PY" bench/compare_cluster.py c-run --c-bin "$CLIENT" --send-url "$url" --recv-url "$url" \
    --address "$ADDRESS" -n "$n" --size "$size" --window 1000 --prefetch 1000 \
    --broker-pid "$BPID" --timeout 120 "$@" >"$f"
}

TLS_ARGS=(--c-arg=--ca "--c-arg=$PKI/ca.pem" --c-arg=--peer-name --c-arg=localhost)

# check BROKER DIR: the TLS client gets through; records the session it gets.
check() {
  mkdir -p "$2"
  c_run "$2/ok.json" 100 "$TLS_URL" 100 "${TLS_ARGS[@]}" \
    || { echo "tls.sh: the TLS client failed against $1:" >&2; cat "$2/ok.json" >&2; exit 1; }
  echo "$1 TLS session: $(openssl s_client -connect "127.0.0.1:${TLS_URL##*:}" -CAfile "$PKI/ca.pem" \
    -verify_hostname localhost -brief </dev/null 2>&1 \
    | grep -E '^(Protocol version|Ciphersuite|Verification):' | paste -sd ' ')" | tee -a "$OUT/machine.txt" >&2
}

# The client must verify: the right CA and name pass; another CA, or another
# name, fail (shown against Sluice: the verifying is the client's own).
sluice_start "$OUT/check"
check sluice "$OUT/check"
refused() {  # CA NAME: the receiver must fail to connect
  local out
  if out=$("$CLIENT" recv --host 127.0.0.1 --port "${TLS_URL##*:}" --address check -n 1 --timeout 10 \
    --ca "$1" --peer-name "$2"); then
    echo "tls.sh: the client accepted the broker with CA $1 and name $2" >&2; exit 1
  fi
  echo "tls.sh: CA $(basename "$1"), name $2: refused: $(grep -o '"error":.*' <<<"$out" | cut -c1-140)" >&2
}
refused "$PKI/other.pem" localhost
refused "$PKI/ca.pem" wrong.example
sluice_stop
if [ "$RABBITMQ" = 1 ]; then
  rmq_start
  rmq_select
  check rmq40 "$OUT/check-rmq40"
fi

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
  for size in $SIZES; do
    for b in $BROKERS; do
      for t in $order; do
        dir=$OUT/$b.$t.$size.$round
        echo "tls.sh: $(date -u +%T) round $round, $size B, $b, $t" >&2
        mkdir -p "$dir"
        if [ "$b" = sluice ]; then sluice_start "$dir"; else rmq_select; fi
        echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/load.txt"
        if [ "$t" = tls ]; then
          c_run "$dir/run.json" "$size" "$TLS_URL" "$N" "${TLS_ARGS[@]}" --label "$b-tls" || echo "tls.sh: $dir failed" >&2
        else
          c_run "$dir/run.json" "$size" "$PLAIN_URL" "$N" --label "$b-plain" || echo "tls.sh: $dir failed" >&2
        fi
        if [ "$b" = sluice ]; then sluice_stop; rm -rf "$dir/data"; fi
      done
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

python3 - "$OUT" "$ROUNDS" "$SIZES" "$BROKERS" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
out, rounds, sizes, brokers = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
NAMES = {"sluice": "Sluice", "rmq40": "RabbitMQ 4.0 QQ"}
def load(b, t, size, r):
    d = f"{out}/{b}.{t}.{size}.{r}"
    try:
        j = json.load(open(f"{d}/run.json"))
        j["load"] = open(f"{d}/load.txt").read().split(":")[1].split()[0]
        return None if j.get("errors") else j
    except (OSError, ValueError):
        return None
print("| size | broker | transport | round | load | recv msg/s | p50 ms | p99 ms | broker µs/msg | sender CPU % | receiver CPU % |")
print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for size in sizes:
    for r in range(1, rounds + 1):
        for b in brokers:
            for t in ("plain", "tls"):
                j = load(b, t, size, r)
                if j is None:
                    print(f"| {size} | {NAMES[b]} | {t} | {r} | | failed | | | | | |")
                    continue
                print(f"| {size} | {NAMES[b]} | {t} | {r} | {j['load']} | {j['recv_rate']:,.0f} | {j['lat_p50_ms']:.2f} "
                      f"| {j['lat_p99_ms']:.2f} | {j['broker_us_per_msg']:.1f} | {j['sender_cpu_pct']:.0f} "
                      f"| {j['receiver_cpu_pct']:.0f} |")
print()
print("| size | broker | plain msg/s (median) | TLS msg/s (median) | TLS ÷ plain, per round | median | broker µs/msg plain | TLS | TLS ÷ plain |")
print("|---:|---|---:|---:|---|---:|---:|---:|---:|")
for size in sizes:
    for b in brokers:
        pairs = [(load(b, "plain", size, r), load(b, "tls", size, r)) for r in range(1, rounds + 1)]
        pairs = [(p, t) for p, t in pairs if p and t]
        if not pairs:
            continue
        ratios = [t["recv_rate"] / p["recv_rate"] for p, t in pairs]
        med = lambda side, key: statistics.median(x[side][key] for x in pairs)
        pr, tr = med(0, "recv_rate"), med(1, "recv_rate")
        pc, tc = med(0, "broker_us_per_msg"), med(1, "broker_us_per_msg")
        print(f"| {size} | {NAMES[b]} | {pr:,.0f} | {tr:,.0f} | {', '.join(f'{x:.2f}' for x in ratios)} "
              f"| {statistics.median(ratios):.2f} | {pc:.1f} | {tc:.1f} | {f'{tc / pc:.2f}' if pc else '–'} |")
PY
echo "tls.sh: results in $OUT" >&2
