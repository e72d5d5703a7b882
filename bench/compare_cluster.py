#!/usr/bin/env python3
"""Helpers for bench/compare-cluster.sh (a 3-node Sluice cluster against a 3-node RabbitMQ 4.0
quorum queue):

  compare_cluster.py c-run --send-url URL --recv-url URL --address A -n N [--rate R]
                           [--c-bin BIN] [--broker-pid PID ...] [--label L] [--c-arg=ARG ...]
      One run of the Proton C client (amqp_perf, from ../shared/peers) with its sender and its
      receiver on different nodes, which amqp_bench.py cannot do: the receiver attaches first
      (READY), then the sender starts. Prints one JSON object with the fields amqp_bench.py
      gives a run (send_rate, recv_rate, e2e_rate, lat_*_ms, broker_cpu_pct, ...) plus each
      broker process's CPU (broker_cpu: [{pid, cpu_s, percent, us_per_msg}]).

  compare_cluster.py failover SLUICE_BENCH_JSON KILL_JSON
      Milliseconds from the kill to the producer's first accepted outcome after it, from the
      stalls sluice-bench reports (--stall-threshold) and the kill's wall-clock time.

  compare_cluster.py table RESULTS_DIR
      The markdown tables: every cell's medians over its runs, then Sluice ÷ RabbitMQ.
"""
import argparse
import glob
import json
import os
import random
import select
import statistics
import subprocess
import sys
import time
from urllib.parse import urlparse

BROKERS = [("sluice", "Sluice ×3"), ("rmq40", "RabbitMQ 4.0 QQ ×3")]
WORKLOADS = ["pipe", "rate5k", "failover"]
CLIENTS = [("sb", "sluice-bench"), ("c", "Proton C")]


# --- c-run ---------------------------------------------------------------------------------
def proc_cpu(pid):
    """utime + stime of one process, seconds; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def side_cmd(a, kind, url, run_id):
    u = urlparse(url)
    assert (u.hostname or "").startswith("127."), "loopback only"
    cmd = [a.c_bin, kind, "--host", u.hostname, "--port", str(u.port or 5672),
           "--address", a.address, "-n", str(a.n), "--size", str(a.size),
           "--window", str(a.window), "--prefetch", str(a.prefetch), "--rate", str(a.rate),
           "--timeout", str(a.timeout), "--run-id", str(run_id)]
    if u.username:
        cmd += ["--user", u.username, "--password", u.password or ""]
    return cmd + a.c_arg


def side_result(p):
    out = p.stdout.read()
    p.wait()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        return dict(error=f"amqp_perf exited {p.returncode} without a result")
    return json.loads(lines[-1])


def c_run(a):
    run_id = random.getrandbits(63)
    cpu0 = {pid: proc_cpu(pid) for pid in a.broker_pid}
    w0 = time.monotonic()
    recv = subprocess.Popen(side_cmd(a, "recv", a.recv_url, run_id), stdout=subprocess.PIPE,
                            text=True)
    ready, _, _ = select.select([recv.stdout], [], [], 30)
    if not ready or recv.stdout.readline().strip() != "READY":
        recv.kill()
        recv.wait()
        print(json.dumps(dict(label=a.label, errors=["the receiver did not attach within 30 s"])))
        return 1
    send = subprocess.Popen(side_cmd(a, "send", a.send_url, run_id), stdout=subprocess.PIPE,
                            text=True)
    s = side_result(send)
    r = side_result(recv)
    wall = time.monotonic() - w0
    received = r.get("received") or 0
    cpus = []
    for pid in a.broker_pid:
        end = proc_cpu(pid)
        used = end - cpu0[pid] if end is not None and cpu0[pid] is not None else None
        cpus.append(dict(pid=pid, cpu_s=used,
                         percent=100 * used / wall if used is not None else None,
                         us_per_msg=used * 1e6 / received if used is not None and received else None))
    total = [c["cpu_s"] for c in cpus]
    lat = r.get("lat_ms") or {}
    out = dict(label=a.label, send_url=a.send_url, recv_url=a.recv_url, n=a.n, rate=a.rate,
               send_rate=s.get("rate"), recv_rate=r.get("rate"),
               lat_p50_ms=lat.get("p50"), lat_p90_ms=lat.get("p90"), lat_p99_ms=lat.get("p99"),
               lat_max_ms=lat.get("max"),
               sender_cpu_pct=100 * s["cpu_s"] / s["wall_s"] if s.get("wall_s") else None,
               receiver_cpu_pct=100 * r["cpu_s"] / r["wall_s"] if r.get("wall_s") else None,
               broker_cpu_pct=100 * sum(total) / wall if total and None not in total else None,
               broker_us_per_msg=(sum(total) * 1e6 / received
                                  if total and None not in total and received else None),
               broker_cpu=cpus, wall_s=wall,
               accepted=s.get("accepted"), rejected=s.get("rejected"), released=s.get("released"),
               received=r.get("received"), stale=r.get("stale"), dups=r.get("dups"),
               errors=[e for e in (s.get("error"), r.get("error")) if e])
    if s.get("t_first") and r.get("t_last"):
        out["e2e_rate"] = a.n / ((r["t_last"] - s["t_first"]) / 1e9)
    print(json.dumps(out))
    return 1 if out["errors"] else 0


# --- failover ------------------------------------------------------------------------------
# Outcomes already on their way when the leader dies may still arrive just after the kill, so
# the outage is the longest gap that spans the kill or starts within this long after it.
KILL_GRACE_MS = 200


def failover_ms(report, kill):
    """(ms from the kill to the first accepted outcome after the outage it caused, how it was
    found). None when no outcome came after the kill."""
    t_kill = kill["kill_unix_ms"]
    threshold = kill.get("stall_threshold_ms", 0)
    near = [s for s in report.get("stalls") or []
            if s["from_unix_ms"] <= t_kill + KILL_GRACE_MS
            and (s["to_unix_ms"] is None or s["to_unix_ms"] >= t_kill)]
    if not near:
        # Outcomes went on with no gap of the threshold's length.
        return threshold, f"< {threshold:g} ms (no stall at the kill)"
    stall = max(near, key=lambda s: float("inf") if s["to_unix_ms"] is None else s["ms"])
    if stall["to_unix_ms"] is None:
        return None, "no accepted outcome after the kill"
    how = "stall"
    if stall["from_unix_ms"] > t_kill:
        how = f"stall from {stall['from_unix_ms'] - t_kill:.0f} ms after the kill"
    return stall["to_unix_ms"] - t_kill, how


# --- table ---------------------------------------------------------------------------------
def load_json(path):
    try:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def run_sb(r):
    lat = r.get("latency") or {}
    cpu = r.get("broker_cpu") or {}
    ms = lambda k: lat[k] / 1000 if k in lat else None
    per = cpu.get("per_pid") or []
    return dict(send=r.get("send_msg_s"), recv=r.get("recv_msg_s"), p50=ms("p50_us"),
                p99=ms("p99_us"), p999=ms("p999_us"), max=ms("max_us"), cpu=cpu.get("percent"),
                us=cpu.get("us_per_msg"), nodes=[p.get("us_per_msg") for p in per],
                lost=r.get("lost"), dups=r.get("duplicates"),
                rejected=(r.get("rejected") or 0) + (r.get("released") or 0))


def run_c(r):
    return dict(send=r.get("send_rate"), recv=r.get("recv_rate"), p50=r.get("lat_p50_ms"),
                p99=r.get("lat_p99_ms"), p999=None, max=r.get("lat_max_ms"),
                cpu=r.get("broker_cpu_pct"), us=r.get("broker_us_per_msg"),
                nodes=[c.get("us_per_msg") for c in r.get("broker_cpu") or []],
                lost=max(0, (r.get("accepted") or 0) - (r.get("received") or 0)),
                dups=r.get("dups"), rejected=(r.get("rejected") or 0) + (r.get("released") or 0))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def ratio(a, b, digits=2):
    return f"{a / b:.{digits}f}" if a is not None and b else "-"


def table(out):
    cells = {}
    for b, _ in BROKERS:
        for w in WORKLOADS:
            for c, _ in CLIENTS:
                runs, metas = [], []
                for path in sorted(glob.glob(os.path.join(out, f"{b}.{c}.{w}.[0-9]*.json"))):
                    if path.endswith((".meta.json", ".kill.json")):
                        continue
                    r = load_json(path)
                    if not r or r.get("errors"):
                        continue
                    try:
                        row = run_sb(r) if c == "sb" else run_c(r)
                    except (KeyError, TypeError, AttributeError):
                        continue
                    meta = load_json(path[:-5] + ".meta.json") or {}
                    if w == "failover":
                        kill = load_json(path[:-5] + ".kill.json")
                        if not kill:
                            continue
                        row["failover"], row["how"] = failover_ms(r, kill)
                    runs.append(row)
                    metas.append(meta)
                if runs:
                    cells[(b, w, c)] = (runs, metas)

    machine = os.path.join(out, "machine.txt")
    if os.path.exists(machine):
        print("```")
        print(open(machine).read().rstrip())
        print("```\n")

    med = {}
    print("Every figure is the median of the cell's runs (runs: how many succeeded). µs/msg is "
          "broker CPU (user + system) per message received; n1..n3 are the three nodes "
          "(producer on n2, consumer on n3 unless the failover cell says otherwise); "
          "leader: the queue's leader in each run; RSS MB: the largest node's resident memory "
          "at the end of a run (Sluice: a fresh cluster per run); lost, dups and rej+rel are "
          "summed over the runs.\n")
    print("| workload | client | broker | runs | send msg/s | recv msg/s | p50 ms | p99 ms "
          "| p99.9 ms | max ms | broker CPU % | µs/msg n1 | n2 | n3 | µs/msg sum | leader "
          "| RSS MB | lost | dups | rej+rel | kill → accepted ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
          "---:|---:|---:|---:|")
    for w in WORKLOADS:
        for c, cname in CLIENTS:
            for b, bname in BROKERS:
                if (b, w, c) not in cells:
                    continue
                runs, metas = cells[(b, w, c)]
                m = {k: median([r[k] for r in runs]) for k in
                     ("send", "recv", "p50", "p99", "p999", "max", "cpu", "us")}
                m["nodes"] = [median([r["nodes"][i] if len(r["nodes"]) > i else None
                                      for r in runs]) for i in range(3)]
                m["failover"] = median([r.get("failover") for r in runs]) if w == "failover" \
                    else None
                med[(b, w, c)] = m
                lost = sum(r["lost"] or 0 for r in runs)
                dups = sum(r["dups"] or 0 for r in runs)
                rej = sum(r["rejected"] or 0 for r in runs)
                leaders = ",".join(str(x.get("leader", "?")) for x in metas)
                rss = median([max((v for v in x.get("rss_mb") or [] if v is not None),
                                  default=None) for x in metas])
                if w == "failover":
                    fo = "; ".join(fmt(r.get("failover"), 0) if r.get("how") == "stall"
                                   else f"{fmt(r.get('failover'), 0)}: {r.get('how')}"
                                   for r in runs)
                    fo = f"**{fmt(m['failover'], 0)}** ({fo})"
                    where = "; ".join(f"kill n{x.get('killed', '?')}, p→n{x.get('producer', '?')}"
                                      f", c→n{x.get('consumer', '?')}" for x in metas)
                    leaders = f"{leaders} ({where})"
                else:
                    fo = "-"
                print(f"| {w} | {cname} | {bname} | {len(runs)} | {fmt(m['send'])} "
                      f"| {fmt(m['recv'])} | {fmt(m['p50'], 2)} | {fmt(m['p99'], 2)} "
                      f"| {fmt(m['p999'], 2)} | {fmt(m['max'], 2)} | {fmt(m['cpu'])} "
                      f"| {fmt(m['nodes'][0], 1)} | {fmt(m['nodes'][1], 1)} "
                      f"| {fmt(m['nodes'][2], 1)} | {fmt(m['us'], 1)} | {leaders} | {fmt(rss)} "
                      f"| {lost} "
                      f"| {dups} | {rej} | {fo} |")

    print("\n### Sluice ÷ RabbitMQ (medians above)\n")
    print("| workload | client | metric | Sluice ×3 | RabbitMQ 4.0 QQ ×3 | Sluice ÷ RabbitMQ "
          "| target (Sluice) | met |")
    print("|---|---|---|---:|---:|---:|---|---|")
    rows = [("pipe", "recv", "throughput, recv msg/s", 0, None),
            ("pipe", "p50", "p50 ms", 2, None),
            ("pipe", "p99", "p99 ms", 2, None),
            ("pipe", "us", "broker µs/msg, 3 nodes", 1, None),
            ("rate5k", "p50", "p50 ms at 5k msg/s", 2, None),
            ("rate5k", "p99", "p99 ms at 5k msg/s", 2, ("≤ 5 ms", lambda v: v <= 5)),
            ("rate5k", "us", "broker µs/msg, 3 nodes", 1, None),
            ("failover", "failover", "leader kill → first accepted, ms", 0,
             ("≤ 1000 ms", lambda v: v <= 1000))]
    for w, key, label, digits, target in rows:
        for c, cname in CLIENTS:
            s = (med.get(("sluice", w, c)) or {}).get(key)
            r = (med.get(("rmq40", w, c)) or {}).get(key)
            if s is None and r is None:
                continue
            met = "-"
            if target and s is not None:
                met = "yes" if target[1](s) else "**no**"
            print(f"| {w} | {cname} | {label} | {fmt(s, digits)} | {fmt(r, digits)} "
                  f"| {ratio(s, r)} | {target[0] if target else ''} | {met} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("c-run")
    c.add_argument("--send-url", required=True)
    c.add_argument("--recv-url", required=True)
    c.add_argument("--address", required=True)
    c.add_argument("-n", type=int, required=True)
    c.add_argument("--size", type=int, default=100)
    c.add_argument("--window", type=int, default=1000)
    c.add_argument("--prefetch", type=int, default=1000)
    c.add_argument("--rate", type=float, default=0)
    c.add_argument("--timeout", type=float, default=120)
    c.add_argument("--c-bin", default=os.path.join(
        os.environ.get("PEERS_DIR", os.path.expanduser("~/.cache/sluice-peers")), "amqp_perf"))
    c.add_argument("--broker-pid", type=int, action="append", default=[])
    c.add_argument("--label", default="")
    c.add_argument("--c-arg", action="append", default=[],
                   help="one more argument for both sides, e.g. --c-arg=--ca --c-arg=ca.pem")
    f = sub.add_parser("failover")
    f.add_argument("report")
    f.add_argument("kill")
    t = sub.add_parser("table")
    t.add_argument("dir")
    a = ap.parse_args()
    if a.cmd == "c-run":
        return c_run(a)
    if a.cmd == "failover":
        ms, how = failover_ms(load_json(a.report), load_json(a.kill))
        print(f"{fmt(ms, 1)} ms ({how})")
        return 0
    table(a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
