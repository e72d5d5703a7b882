#!/usr/bin/env python3
"""The table of bench/issue16.sh: one column per broker, then Sluice's ratio
to each other broker (same run).

    issue16_table.py OUT COUNT_A BROKER...

Reads OUT/BROKER/{fill,drain,queues,fanout}.json (sluice-bench --json) and
OUT/BROKER/rss.csv (seconds,phase,rss_mib). A figure a broker did not run is
left blank.
"""
import csv
import json
import os
import sys


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def peaks(path):
    """The peak RSS (MiB) of each phase."""
    peak = {}
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                peak[row["phase"]] = max(peak.get(row["phase"], 0), int(row["rss_mib"]))
    return peak


def cpu(report):
    return report["broker_cpu"]["percent"] if report and report.get("broker_cpu") else None


def latency(report, key):
    if report and report.get("latency"):
        return report["latency"][key] / 1e3
    return None


def checked(report, expected):
    """'received of expected, lost, duplicates' for the loss row."""
    if not report:
        return None
    lost = report["lost"] if report["lost"] is not None else expected - report["received"]
    return f"{report['received']:,} recv, {lost:,} lost, {report['duplicates']:,} dup"


def rows(out, broker, count_a):
    d = os.path.join(out, broker)
    fill, drain = load(f"{d}/fill.json"), load(f"{d}/drain.json")
    queues, fan = load(f"{d}/queues.json"), load(f"{d}/fanout.json")
    peak = peaks(f"{d}/rss.csv")
    get = lambda r, k: r[k] if r else None
    fanout_copies = fan["accepted"] * fan["consumers"] if fan else None
    return [
        ("(a) fill, msg/s", get(fill, "send_msg_s")),
        ("(a) fill: broker CPU %", cpu(fill)),
        ("(a) fill: peak RSS, MiB", peak.get("fill")),
        ("(a) drain, msg/s", get(drain, "recv_msg_s")),
        ("(a) drain: broker CPU %", cpu(drain)),
        ("(a) drain: peak RSS, MiB", peak.get("drain")),
        ("(a) drained", checked(drain, count_a)),
        ("(b) sent (accepted), msg/s", get(queues, "send_msg_s")),
        ("(b) delivered, msg/s", get(queues, "recv_msg_s")),
        ("(b) latency p50, ms", latency(queues, "p50_us")),
        ("(b) latency p99, ms", latency(queues, "p99_us")),
        ("(b) broker CPU %", cpu(queues)),
        ("(b) peak RSS, MiB", peak.get("queues")),
        ("(b) loss", checked(queues, get(queues, "accepted"))),
        ("(c) published (accepted), msg/s", get(fan, "send_msg_s")),
        ("(c) delivered, msg/s summed", get(fan, "recv_msg_s")),
        ("(c) latency p50, ms", latency(fan, "p50_us")),
        ("(c) latency p99, ms", latency(fan, "p99_us")),
        ("(c) broker CPU %", cpu(fan)),
        ("(c) peak RSS, MiB", peak.get("fanout")),
        ("(c) loss", checked(fan, fanout_copies)),
    ]


def cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main():
    out, count_a, brokers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    table = {b: rows(out, b, count_a) for b in brokers}
    others = [b for b in brokers if b != "sluice"] if "sluice" in brokers else []
    head = brokers + [f"sluice / {b}" for b in others]
    print("| | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for i, (name, _) in enumerate(table[brokers[0]]):
        values = [table[b][i][1] for b in brokers]
        ratios = []
        for b in others:
            mine, theirs = table["sluice"][i][1], table[b][i][1]
            numeric = isinstance(mine, (int, float)) and isinstance(theirs, (int, float))
            ratios.append(f"{mine / theirs:.2f}" if numeric and theirs else "")
        print(f"| {name} | " + " | ".join(cell(v) for v in values + ratios) + " |")


if __name__ == "__main__":
    sys.exit(main())
