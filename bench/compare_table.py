#!/usr/bin/env python3
"""Prints compare.sh's results (a directory of sluice-bench JSON and amqp_bench.py JSONL
files) as a markdown table, with each cell's receive rate and p99 as a ratio to Sluice's
for the same client and workload.

  compare_table.py RESULTS_DIR
"""
import glob
import json
import os
import sys

BROKERS = ["base", "sluice", "proton", "rmq310", "rmq40"]
WORKLOADS = ["pipe", "rate5k", "presettled"]
CLIENTS = [("sb", "sluice-bench"), ("c", "Proton C")]


def load(path):
    try:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def row_sb(r):
    lat = r.get("latency") or {}
    cpu = r.get("broker_cpu") or {}
    ms = lambda k: lat[k] / 1000 if k in lat else None
    return dict(send=r["send_msg_s"], recv=r["recv_msg_s"], p50=ms("p50_us"), p99=ms("p99_us"),
                p999=ms("p999_us"), max=ms("max_us"), cpu=cpu.get("percent"),
                us=cpu.get("us_per_msg"), lost=r.get("lost"), dups=r.get("duplicates"))


def row_c(r):
    m = r["median"]
    runs = r.get("runs") or [{}]
    cpu, rate = m.get("broker_cpu_pct"), m.get("e2e_rate") or m.get("recv_rate")
    # amqp_bench reports broker CPU % over the run; per message ~ CPU share / rate.
    us = cpu / 100 * 1e6 / rate if cpu is not None and rate else None
    lost = sum(max(0, (x.get("accepted") or 0) - (x.get("received") or 0)) for x in runs)
    dups = sum(x.get("dups") or 0 for x in runs)
    return dict(send=m.get("send_rate"), recv=m.get("recv_rate"), p50=m.get("lat_p50_ms"),
                p99=m.get("lat_p99_ms"), p999=None, max=m.get("lat_max_ms"), cpu=cpu, us=us,
                lost=lost, dups=dups)


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def main():
    out = sys.argv[1]
    rows = {}
    for b in BROKERS:
        for w in WORKLOADS:
            for c, _ in CLIENTS:
                ext = "json" if c == "sb" else "jsonl"
                r = load(os.path.join(out, f"{b}.{c}.{w}.{ext}"))
                if r:
                    try:
                        rows[(b, w, c)] = row_sb(r) if c == "sb" else row_c(r)
                    except (KeyError, TypeError):
                        pass
    machine = os.path.join(out, "machine.txt")
    if os.path.exists(machine):
        print("```")
        print(open(machine).read().rstrip())
        print("```\n")
    print("| workload | client | broker | send msg/s | recv msg/s | p50 ms | p99 ms | p99.9 ms | max ms "
          "| broker CPU % | broker µs/msg | lost | dups | recv ÷ Sluice | p99 ÷ Sluice |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in WORKLOADS:
        for c, cname in CLIENTS:
            base = rows.get(("sluice", w, c))
            for b in BROKERS:
                r = rows.get((b, w, c))
                if not r:
                    continue
                ratio = p99r = "-"
                if base and base["recv"] and r["recv"]:
                    ratio = f"{r['recv'] / base['recv']:.2f}"
                if base and base["p99"] and r["p99"]:
                    p99r = f"{r['p99'] / base['p99']:.2f}"
                print(f"| {w} | {cname} | {b} | {fmt(r['send'])} | {fmt(r['recv'])} | {fmt(r['p50'], 2)} "
                      f"| {fmt(r['p99'], 2)} | {fmt(r['p999'], 2)} | {fmt(r['max'], 2)} | {fmt(r['cpu'])} "
                      f"| {fmt(r['us'], 1)} | {fmt(r['lost'])} | {fmt(r['dups'])} | {ratio} | {p99r} |")


if __name__ == "__main__":
    main()
