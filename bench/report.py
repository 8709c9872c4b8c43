#!/usr/bin/env python3
"""Turns the fio JSON of one bench/run.sh run into one markdown table.

Usage: report.py RESULTS_DIR   (RESULTS_DIR/<target>/<job>-<mode>-r<round>.json)

Each row is one job, mode and target: the median over the rounds, the min-max, and on the
atrest rows the ratios of atrest's median to those of the null-cipher atrest (replicas 1),
gocryptfs and the passthrough FUSE filesystem. Sequential jobs are given in MiB/s, 4 KiB jobs
in IOPS (reads and writes added up); higher is better everywhere.
"""
import json
import os
import re
import statistics
import sys

TARGET_ORDER = ["raw", "passthrough", "gocryptfs", "atrest-null-r1", "atrest-r1", "atrest-r2"]
JOB_ORDER = ["seqwrite", "seqread", "randread", "randwrite", "mixed", "parallel"]
MODE_ORDER = ["direct", "buffered"]
ATREST = {"atrest-r1", "atrest-r2"}
NAME = re.compile(r"^(?P<job>[a-z]+)-(?P<mode>direct|buffered)-r(?P<round>\d+)\.json$")


def metric(job, data):
    """(value, unit) of one fio result: MiB/s for 1 MiB jobs, IOPS for 4 KiB jobs."""
    j = data["jobs"][0]
    if job.startswith("seq"):
        return (j["read"]["bw"] + j["write"]["bw"]) / 1024.0, "MiB/s"
    return j["read"]["iops"] + j["write"]["iops"], "IOPS"


def load(results):
    values = {}  # (job, mode, target) -> [value...]
    units = {}
    for target in sorted(os.listdir(results)):
        tdir = os.path.join(results, target)
        if not os.path.isdir(tdir):
            continue
        for name in sorted(os.listdir(tdir)):
            m = NAME.match(name)
            if not m:
                continue
            try:
                with open(os.path.join(tdir, name)) as f:
                    text = f.read()
                # fio may print notes before the JSON object.
                data = json.loads(text[text.index("{"):])
                value, unit = metric(m["job"], data)
            except (ValueError, KeyError, IndexError) as e:
                print(f"<!-- skipped {target}/{name}: {e} -->")
                continue
            values.setdefault((m["job"], m["mode"], target), []).append(value)
            units[m["job"]] = unit
    return values, units


def fmt(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def order(items, known):
    return sorted(items, key=lambda x: (known.index(x) if x in known else len(known), x))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    results = sys.argv[1]
    values, units = load(results)
    settings = {}
    path = os.path.join(results, "settings.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    settings[k] = v

    print(f"## fio through each target ({settings.get('date_utc', '?')}, git "
          f"{settings.get('git', '?')})\n")
    print(f"{settings.get('cpu', '?')}, {settings.get('cores', '?')} cores, kernel "
          f"{settings.get('kernel', '?')}, {settings.get('fio', '?')}; "
          f"{settings.get('rounds', '?')} rounds of {settings.get('runtime_s', '?')} s per run, "
          f"{settings.get('size', '?')} per file, backing store "
          f"{settings.get('backing', '?')}, atrest drives of {settings.get('drive_size', '?')}, "
          f"{settings.get('fuse_threads', '?')} FUSE threads (atrest, passthrough).")
    if settings.get("failed"):
        print(f"\nNot run (could not be set up): {settings['failed']}.")
    if settings.get("stopped"):
        print(f"\nIncomplete: {settings['stopped']}.")
    print()
    print("| job | mode | target | unit | median | min-max | n | atrest/null-cipher "
          "| atrest/gocryptfs | atrest/passthrough |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")

    jobs = order({k[0] for k in values}, JOB_ORDER)
    modes = order({k[1] for k in values}, MODE_ORDER)
    targets = order({k[2] for k in values}, TARGET_ORDER)
    for job in jobs:
        for mode in modes:
            med = {t: statistics.median(values[(job, mode, t)])
                   for t in targets if (job, mode, t) in values}
            for t in targets:
                vs = values.get((job, mode, t))
                if not vs:
                    continue
                ratios = []
                for base in ("atrest-null-r1", "gocryptfs", "passthrough"):
                    if t in ATREST and base in med and med[base] > 0 and \
                            not (base == "atrest-null-r1" and t != "atrest-r1"):
                        ratios.append(f"{med[t] / med[base]:.2f}")
                    else:
                        ratios.append("")
                print(f"| {job} | {mode} | {t} | {units[job]} | {fmt(med[t])} | "
                      f"{fmt(min(vs))}-{fmt(max(vs))} | {len(vs)} | " + " | ".join(ratios) + " |")
    meta_table(results, settings)
    return 0


META_PHASES = [("create", "create"), ("stat", "stat"), ("list", "list (readdir)"),
               ("delete", "delete")]
META_NAME = re.compile(r"^meta-r(?P<round>\d+)\.meta$")


def meta_table(results, settings):
    """The metadata benchmark (bench/meta.py): seconds per phase, lower is better."""
    times = {}  # (phase, target) -> [seconds...]
    n = None
    for target in sorted(os.listdir(results)):
        tdir = os.path.join(results, target)
        if not os.path.isdir(tdir):
            continue
        for name in sorted(os.listdir(tdir)):
            if not META_NAME.match(name):
                continue
            try:
                with open(os.path.join(tdir, name)) as f:
                    data = json.load(f)
                n = data["n"]
                for phase, _ in META_PHASES:
                    times.setdefault((phase, target), []).append(float(data[phase + "_s"]))
            except (ValueError, KeyError, OSError) as e:
                print(f"<!-- skipped {target}/{name}: {e} -->")
    if not times:
        return
    targets = order({k[1] for k in times}, TARGET_ORDER)
    print(f"\n## File metadata: {n:,} empty files in one directory\n")
    print("Seconds per phase (lower is better); `atrest/gocryptfs` is the ratio of the medians of "
          "times, so below 1 means atrest is faster.\n")
    print("| phase | target | median s | min-max s | n | ops/s (median) | atrest/gocryptfs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for phase, label in META_PHASES:
        med = {t: statistics.median(times[(phase, t)]) for t in targets if (phase, t) in times}
        for t in targets:
            vs = times.get((phase, t))
            if not vs:
                continue
            ratio = ""
            if t in ATREST and med.get("gocryptfs", 0) > 0:
                ratio = f"{med[t] / med['gocryptfs']:.2f}"
            ops = n / med[t] if med[t] > 0 else 0  # entries per second for the listing
            print(f"| {label} | {t} | {med[t]:.3f} | {min(vs):.3f}-{max(vs):.3f} | {len(vs)} | "
                  f"{ops:,.0f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
