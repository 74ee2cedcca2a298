#!/usr/bin/env python3
"""The tables of bench/compare.sh's pool mode (see bench/pool.sh and bench/README.md).

    pool_report.py [--users N --clients N --duration S --rounds N] DIR

DIR holds, per round R and row ROW: rR-ROW.json (portcullis-bench logins: a 1-client step,
then a CLIENTS step), rR-ROW.hosts (Dovecot's logins by local address) and, for the rows with a
store, rR-ROW.redis-before/-after (redis's INFO commandstats lines and cpu_ns:N, its CPU so far).
Prints Markdown: the proxy's CPU per login, rate and latency per row with ratios against the
static row; then what the store did per login.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

ROWS = ["static", "pool", "pool+store", "pool+store+cap"]
HOSTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
# What the proxy asks the store with one round trip each: its scripts (placing a user, a
# session in and out of the counts).
SCRIPTS = ["evalsha", "eval", "evalsha_ro", "eval_ro"]
# The guard's question about the user (its failures across the fleet, whether the address is
# known good for it): one pipeline, GET and ZSCORE. ZSCORE runs elsewhere only inside the
# guard's failure script, which no login of this benchmark (all good passwords) runs.
GUARD = "zscore"
# The instance's poll of the fleet's drains, kicks and moves (a few times a second): one
# pipeline, HKEYS then XRANGE (XREVRANGE the first time). HKEYS also runs inside the guard's
# success script, which trusted clients (the benchmark's) do not run; XRANGE only here.
POLL = ["xrange", "xrevrange"]
# Our own snapshots, not the proxy's.
OURS = {"info"}


def read_snapshot(path):
    calls, usec, cpu_ns, reads = {}, {}, 0, 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
            if m:
                calls[m.group(1)] = int(m.group(2))
                usec[m.group(1)] = int(m.group(3))
            elif line.startswith("cpu_ns:"):
                cpu_ns = int(line.split(":", 1)[1])
            elif line.startswith("total_reads_processed:"):
                reads = int(line.split(":", 1)[1])
    return calls, usec, cpu_ns, reads


def read_hosts(path):
    counts = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    counts[parts[0]] = int(parts[1])
    return counts


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def ratio(x, ref):
    return "" if x is None or not ref else f" ({x / ref:.2f}×)"


def load(directory):
    """Per row: its rounds, each {json steps, hosts, redis delta}."""
    rows = {}
    for path in sorted(glob.glob(os.path.join(directory, "r*-*.json"))):
        base = path[: -len(".json")]
        name = os.path.basename(base)
        round_no, row = int(name.split("-", 1)[0][1:]), name.split("-", 1)[1]
        with open(path) as f:
            out = json.load(f)
        steps = sorted(out.get("logins", []), key=lambda s: s["clients"])
        one = next((s for s in steps if s["clients"] == 1), None)
        many = steps[-1] if steps else None
        rnd = {"round": round_no, "one": one, "many": many, "hosts": read_hosts(base + ".hosts"), "redis": None}
        if os.path.exists(base + ".redis-before") and os.path.exists(base + ".redis-after"):
            c0, u0, n0, r0 = read_snapshot(base + ".redis-before")
            c1, u1, n1, r1 = read_snapshot(base + ".redis-after")
            calls = {k: v - c0.get(k, 0) for k, v in c1.items() if v - c0.get(k, 0) > 0}
            usec = {k: v - u0.get(k, 0) for k, v in u1.items() if k in calls}
            # Our two INFO commands' own reads are taken off.
            reads = max(r1 - r0 - 1, 0)
            rnd["redis"] = {"calls": calls, "usec": usec, "cpu_ns": n1 - n0, "reads": reads}
        rows.setdefault(row, []).append(rnd)
    return rows


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cpu_of(rnd):
    """The proxy's CPU ms per login in one round: both steps' CPU over both steps' logins."""
    steps = [s for s in (rnd["one"], rnd["many"]) if s and s.get("cpu_seconds") is not None]
    logins = sum(s["logins"] for s in steps)
    return sum(s["cpu_seconds"] for s in steps) * 1000 / logins if logins else None


def summary(rounds, reference):
    """One row's figures over its rounds: the median of the rounds (a round the machine's other
    work disturbed moves it little); its CPU against `reference`'s (the static row's rounds) in
    the same round."""
    many = [r["many"] for r in rounds if r["many"]]
    one = [r["one"] for r in rounds if r["one"]]
    per_round = [cpu_of(r) for r in rounds if cpu_of(r) is not None]
    same_round = {r["round"]: cpu_of(r) for r in reference or []}
    ref_p50 = {r["round"]: (r["one"] or {}).get("latency", {}).get("p50_ms") for r in reference or []}
    added = [
        r["one"]["latency"]["p50_ms"] - ref_p50[r["round"]]
        for r in rounds
        if r["one"] and r["one"]["latency"].get("p50_ms") is not None
        and ref_p50.get(r["round"]) is not None
    ]
    ratios = [
        cpu_of(r) / same_round[r["round"]]
        for r in rounds
        if cpu_of(r) is not None and same_round.get(r["round"])
    ]
    errors = sum((s.get("errors") or {}).get("total", 0) for s in many + one)
    hosts = {}
    for r in rounds:
        for h, n in r["hosts"].items():
            hosts[h] = hosts.get(h, 0) + n
    return {
        "cpu": median(per_round),
        "cpu_range": (min(per_round), max(per_round)) if per_round else None,
        "ratio": median(ratios),
        "added_p50": median(added),
        "ratio_range": (min(ratios), max(ratios)) if ratios else None,
        "rate": median([s["logins_per_s"] for s in many]),
        "p50": median([s["latency"].get("p50_ms") for s in many]),
        "p99": median([s["latency"].get("p99_ms") for s in many]),
        "one_p50": median([s["latency"].get("p50_ms") for s in one]),
        "one_p99": median([s["latency"].get("p99_ms") for s in one]),
        "errors": errors,
        "hosts": hosts,
    }


def store_summary(rounds):
    """What redis did per login (both steps) over a row's rounds, or None without a store."""
    measured = [r for r in rounds if r["redis"]]
    if not measured:
        return None
    logins = sum((r["one"] or {}).get("logins", 0) + (r["many"] or {}).get("logins", 0) for r in measured)
    if not logins:
        return None
    calls, reads = {}, 0
    for r in measured:
        for k, v in r["redis"]["calls"].items():
            if k not in OURS:
                calls[k] = calls.get(k, 0) + v
        reads += r["redis"]["reads"]
    scripts = sum(calls.get(k, 0) for k in SCRIPTS)

    def per_login(r, value):
        n = (r["one"] or {}).get("logins", 0) + (r["many"] or {}).get("logins", 0)
        return value / n if n else None

    # Times: the median of the rounds, as for the proxy; counts: over all rounds.
    cpu_us = median([per_login(r, r["redis"]["cpu_ns"] / 1000) for r in measured])
    script_us = median(
        [per_login(r, sum(r["redis"]["usec"].get(k, 0) for k in SCRIPTS)) for r in measured]
    )
    return {
        "logins": logins,
        "calls": {k: v / logins for k, v in calls.items()},
        "scripts": scripts / logins,
        "guard": calls.get(GUARD, 0) / logins,
        "polls": sum(calls.get(k, 0) for k in POLL) / logins,
        "reads": reads / logins,
        "script_usec": script_us,
        "cpu_us": cpu_us,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    opts = ap.parse_args()
    data = load(opts.dir)
    if not data:
        sys.exit(f"pool_report: no results in {opts.dir}")
    rows = [r for r in ROWS if r in data] + sorted(r for r in data if r not in ROWS)
    s = {r: summary(data[r], data.get("static")) for r in rows}
    ref = s.get("static")
    print("## Pool: a static back end against a pool of three (plain IMAP)")
    print()
    print(
        f"{opts.users:,} users, each login the next one (user0, user1, ...); per row and round a "
        f"fresh Portcullis, metered alone: 1 client for {opts.duration:g} s (latency with nothing "
        f"queued), then {opts.clients} clients for {opts.duration:g} s (CPU per login, rate). "
        f"{opts.rounds} round(s), the row order reversed in even rounds. Every figure is the "
        "median of the rounds (the machine is shared: a disturbed round moves a median little); "
        "CPU ms/login: the proxy's CPU over the logins of both steps (in brackets, the lowest and "
        "highest round); × static: the median of each round's ratio to the static row of the same "
        "round (in brackets, the lowest and highest); logins/s, p50 and p99: the "
        f"{opts.clients}-client step. The pool's three servers are three addresses of one Dovecot; "
        "static is the first of them."
    )
    print()
    print(
        f"| row | CPU ms/login | × static | logins/s | p50 ms | p99 ms | 1 client: p50 ms "
        f"| + over static | 1 client: p99 ms | errors | Dovecot logins on .11 / .12 / .13 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        x = s[r]
        lo_hi = f" ({x['cpu_range'][0]:.3f}–{x['cpu_range'][1]:.3f})" if x["cpu_range"] else ""
        times = "–" if x["ratio"] is None else f"{x['ratio']:.2f}×"
        if x["ratio_range"] and r != "static":
            times += f" ({x['ratio_range'][0]:.2f}–{x['ratio_range'][1]:.2f})"
        extra = "–" if x["added_p50"] is None else f"{x['added_p50']:+.3f}"
        spread = " / ".join(f"{x['hosts'].get(h, 0):,}" for h in HOSTS)
        print(
            f"| {r} | {fmt(x['cpu'])}{lo_hi} | {times} | {fmt(x['rate'], 0)} "
            f"| {fmt(x['p50'], 2)}{ratio(x['p50'], ref and ref['p50'])} "
            f"| {fmt(x['p99'], 2)}{ratio(x['p99'], ref and ref['p99'])} "
            f"| {fmt(x['one_p50'], 3)} | {extra} | {fmt(x['one_p99'], 3)} | {x['errors']} | {spread} |"
        )
    print()
    print("Better: lower CPU ms/login, p50, p99; higher logins/s. \"+ over static\": ms added to "
          "a login's p50 with one client (the median of the rounds' differences).")
    stores = {r: store_summary(data[r]) for r in rows}
    stores = {r: v for r, v in stores.items() if v}
    if not stores:
        return
    print()
    print("### The store's work per login")
    print()
    print(
        "Counted by redis-server itself around each row (`INFO` before and after: "
        "`commandstats` and `total_reads_processed`; its CPU: the run time of all its threads "
        "from `/proc/PID/task/*/schedstat`), divided by the row's logins (both steps); "
        "times are the median of the rounds. The rows "
        "without a store show redis idle (its own timers) over the same time. Round trips: the "
        "scripts the proxy runs in the store (`EVALSHA`: placing the user, counting the session "
        "in, and out), the guard's question about the user (a `GET` + `ZSCORE` pipeline), and "
        "the instance's poll of the fleet's commands (a `HKEYS` + `XRANGE` pipeline a few "
        "times a second, shared by all logins). Reads: how many times redis read requests off its sockets (one "
        "per round trip, fewer where concurrent sessions' requests arrive together). Commands "
        "inside a script are counted by Redis too: listed below, they cost no round trip."
    )
    print()
    print("| row | round trips/login | scripts | guard | poll | redis reads/login "
          "| redis CPU µs/login | script time µs/login |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r, v in stores.items():
        trips = v["scripts"] + v["guard"] + v["polls"]
        print(f"| {r} | {trips:.2f} | {v['scripts']:.3f} | {v['guard']:.3f} | {v['polls']:.4f} "
              f"| {v['reads']:.2f} | {v['cpu_us']:.1f} | {v['script_usec']:.1f} |")
    print()
    commands = sorted({k for v in stores.values() for k in v["calls"]},
                      key=lambda k: -max(v["calls"].get(k, 0) for v in stores.values()))
    print("| command, calls per login | " + " | ".join(stores) + " |")
    print("|---|" + "---:|" * len(stores))
    for k in commands:
        print(f"| {k.upper()} | " + " | ".join(f"{v['calls'].get(k, 0):.3f}" for v in stores.values()) + " |")


if __name__ == "__main__":
    main()
