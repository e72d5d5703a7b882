#!/usr/bin/env bash
# Throughput over TLS against plain AMQP, one run, Proton C client (issue 15;
# not part of CI).
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
# message and the clients' CPU, then the medians and TLS ÷ plain.
#
# RabbitMQ is not run: see docs/performance.md ("TLS against plain").
#
# Env: ROUNDS (5), N (100000), SIZES ("100 1024"), BUILD (1), PEERS
#      (../shared/peers), PEERS_DIR (~/.cache/sluice-peers), OUT (default
#      target/tls/DATE).
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
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet -p sluice --bin sluice
fi

PID=''
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true' EXIT

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
  echo "sluice: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "openssl (client side): $(openssl version)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ROUNDS=$ROUNDS N=$N SIZES=\"$SIZES\""
} | tee "$OUT/machine.txt" >&2

# start DIR: a fresh broker with both listeners; sets PID, PLAIN_PORT and TLS_PORT.
start() {
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
  PLAIN_PORT=$(sed -n 's/.* amqp=[0-9.]*:\([0-9]*\).*/\1/p' <<<"$line")
  TLS_PORT=$(sed -n 's/.* amqps=[0-9.]*:\([0-9]*\).*/\1/p' <<<"$line")
}

stop() {
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

# c_run FILE SIZE PORT N [CLIENT ARGS...]: one pipe run of the patched client.
c_run() {
  local f=$1 size=$2 port=$3 n=$4; shift 4
  "$PY" bench/compare_cluster.py c-run --c-bin "$CLIENT" \
    --send-url "amqp://127.0.0.1:$port" --recv-url "amqp://127.0.0.1:$port" \
    --address tls-bench -n "$n" --size "$size" --window 1000 --prefetch 1000 \
    --broker-pid "$PID" --timeout 120 "$@" >"$f"
}

TLS_ARGS=(--c-arg=--ca "--c-arg=$PKI/ca.pem" --c-arg=--peer-name --c-arg=localhost)

# Checks that the client verifies: the right CA and name pass; another CA, or
# another name, fail.
start "$OUT/check"
c_run "$OUT/check/ok.json" 100 "$TLS_PORT" 100 "${TLS_ARGS[@]}" \
  || { echo "tls.sh: the TLS client failed against the broker:" >&2; cat "$OUT/check/ok.json" >&2; exit 1; }
refused() {  # CA NAME: the receiver must fail to connect
  local out
  if out=$("$CLIENT" recv --host 127.0.0.1 --port "$TLS_PORT" --address check -n 1 --timeout 10 \
    --ca "$1" --peer-name "$2"); then
    echo "tls.sh: the client accepted the broker with CA $1 and name $2" >&2; exit 1
  fi
  echo "tls.sh: CA $(basename "$1"), name $2: refused: $(grep -o '"error":.*' <<<"$out" | cut -c1-140)" >&2
}
refused "$PKI/other.pem" localhost
refused "$PKI/ca.pem" wrong.example
stop

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
  for size in $SIZES; do
    for t in $order; do
      dir=$OUT/$t.$size.$round
      echo "tls.sh: $(date -u +%T) round $round, $size B, $t" >&2
      start "$dir"
      echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/load.txt"
      if [ "$t" = tls ]; then
        c_run "$dir/run.json" "$size" "$TLS_PORT" "$N" "${TLS_ARGS[@]}" --label tls || echo "tls.sh: $dir failed" >&2
      else
        c_run "$dir/run.json" "$size" "$PLAIN_PORT" "$N" --label plain || echo "tls.sh: $dir failed" >&2
      fi
      stop
      rm -rf "$dir/data"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

python3 - "$OUT" "$ROUNDS" "$SIZES" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
out, rounds, sizes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def load(t, size, r):
    try:
        j = json.load(open(f"{out}/{t}.{size}.{r}/run.json"))
        j["load"] = open(f"{out}/{t}.{size}.{r}/load.txt").read().split(":")[1].split()[0]
        return None if j.get("errors") else j
    except (OSError, ValueError):
        return None
print("| size | transport | round | load | recv msg/s | p50 ms | p99 ms | broker µs/msg | sender CPU % | receiver CPU % |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for size in sizes:
    for r in range(1, rounds + 1):
        for t in ("plain", "tls"):
            j = load(t, size, r)
            if j is None:
                print(f"| {size} | {t} | {r} | | failed | | | | | |")
                continue
            print(f"| {size} | {t} | {r} | {j['load']} | {j['recv_rate']:,.0f} | {j['lat_p50_ms']:.2f} | {j['lat_p99_ms']:.2f} "
                  f"| {j['broker_us_per_msg']:.1f} | {j['sender_cpu_pct']:.0f} | {j['receiver_cpu_pct']:.0f} |")
print()
print("| size | plain msg/s (median) | TLS msg/s (median) | TLS ÷ plain, per round | median | broker µs/msg plain | TLS | TLS ÷ plain |")
print("|---:|---:|---:|---|---:|---:|---:|---:|")
for size in sizes:
    pairs = [(load("plain", size, r), load("tls", size, r)) for r in range(1, rounds + 1)]
    pairs = [(p, t) for p, t in pairs if p and t]
    if not pairs:
        continue
    ratios = [t["recv_rate"] / p["recv_rate"] for p, t in pairs]
    med = lambda side, key: statistics.median(x[side][key] for x in pairs)
    pr, tr = med(0, "recv_rate"), med(1, "recv_rate")
    pc, tc = med(0, "broker_us_per_msg"), med(1, "broker_us_per_msg")
    print(f"| {size} | {pr:,.0f} | {tr:,.0f} | {', '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f} "
          f"| {pc:.1f} | {tc:.1f} | {tc / pc:.2f} |")
PY
echo "tls.sh: results in $OUT" >&2
