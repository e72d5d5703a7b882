# What the bench/*.sh scripts share; sourced, not run.

# wait_ready LOG: the AMQP address a starting Sluice announces in LOG
# ("sluice ready: amqp=ADDR"), waiting up to 10 s; fails if it never does.
wait_ready() {
  local log=$1 addr=
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*sluice ready: amqp=\([0-9.:]*\).*/\1/p' "$log" | head -1)
    [ -n "$addr" ] && { echo "$addr"; return; }
    sleep 0.1
  done
  echo "sluice did not start: see $log" >&2
  return 1
}

# receive_rate REPORT N: the receive rate (msg/s) of a sluice-bench --json
# REPORT, having checked that all N messages arrived, each once.
receive_rate() {
  python3 - "$1" "$2" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
if report["received"] != n or report["lost"] or report["duplicates"]:
    sys.exit(f"{sys.argv[1]}: received {report['received']} of {n}, lost {report['lost']}, "
             f"duplicates {report['duplicates']}")
print(f"{report['recv_msg_s']:.0f}")
PY
}

# sample_rss DIR: every second until killed, appends "seconds,phase,rss_mib"
# to DIR/rss.csv for the process whose pid is in DIR/pid, in the phase named
# in DIR/phase (files, since both change under it: a restart, the next
# phase). Run it in the background.
sample_rss() {
  local dir=$1 t=0 pid rss
  [ -s "$dir/rss.csv" ] || echo "seconds,phase,rss_mib" > "$dir/rss.csv"
  while true; do
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$t,$(cat "$dir/phase" 2>/dev/null),$((rss / 1024))" >> "$dir/rss.csv"
    sleep 1
    t=$((t + 1))
  done
}
