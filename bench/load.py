#!/usr/bin/env python3
"""Load generator and meter for the Portcullis benchmark (Python 3 stdlib only).

  load.py seed MAILDIR_CUR          write the bench messages (one of ~1 MiB) into a Maildir cur/
  load.py bench --target SPEC ...   run the scenarios against each target and print the table

A target SPEC is "NAME,port=P[,tls=0|1][,pid=PID][,base=OTHER_NAME][,host=H]":
  pid   the process whose whole process tree (it and all its descendants) is metered for CPU
        and memory (Portcullis: its one process; perdition: master + one child per session;
        Dovecot: master + login/auth/imap processes);
  base  the row this one is compared with (ratios), normally the direct Dovecot row.

Scenarios (see bench/README.md for the method):
  1 login   --clients N concurrent clients loop connect/greeting/LOGIN/LOGOUT for --duration s:
            logins/s, p50/p99 latency (connect start -> tagged OK of LOGIN), CPU per 1000 logins.
  2 fetch   one logged-in client FETCHes the ~1 MiB message --fetches times: MiB/s.
  3 idle    --idle M sessions logged in, SELECTed and in IDLE: memory (RSS and PSS summed over
            the target's process tree) with M sessions minus before, per session.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import ssl
import sys
import time

USER, PASSWORD = "alice", "alicepw"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# Seeding (same bytes as tests/support/mod.rs alice_messages()[0] and [2])
# ---------------------------------------------------------------------------------------------

def big_message():
    head = (
        "From: Bob <bob@example.org>\n"
        "To: Alice <alice@example.org>\n"
        "Subject: Big message\n"
        "Date: Wed, 22 Nov 2023 12:00:00 +0000\n"
        "Message-ID: <msg3@portcullis.test>\n"
        "\n"
    ).replace("\n", "\r\n").encode()
    out = bytearray(head)
    i = 0
    while len(out) < (1 << 20):
        i += 1
        h = (i * 2654435761) & 0xFFFFFFFF
        out += f"{i:06} The quick brown fox jumps over the lazy dog 0123456789 {h:08x}\r\n".encode()
    return bytes(out)


def small_message():
    return (
        "From: Bob <bob@example.org>\n"
        "To: Alice <alice@example.org>\n"
        "Subject: Hello Alice\n"
        "Date: Mon, 20 Nov 2023 10:00:00 +0000\n"
        "Message-ID: <msg1@portcullis.test>\n"
        "\n"
        "Hi Alice,\nthis is message one.\n"
    ).replace("\n", "\r\n").encode()


def seed(cur):
    for i, msg in enumerate([small_message(), big_message()]):
        name = f"{1700000000 + i}.M{i + 1}P1.bench,S={len(msg)},W={len(msg)}:2,S"
        with open(os.path.join(cur, name), "wb") as f:
            f.write(msg)


# ---------------------------------------------------------------------------------------------
# /proc meters
# ---------------------------------------------------------------------------------------------

def _stat(pid):
    """(ppid, utime+stime+cutime+cstime in ticks) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is state (field 3); ppid is field 4; utime..cstime are fields 14..17.
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def tree(root):
    """{pid: cpu_ticks} for root and all its descendants."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                stats[int(name)] = st
    kids = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in stats:
            out[p] = stats[p][1]
            todo.extend(kids.get(p, []))
    return out


def tree_cpu(root):
    """CPU seconds of the tree: every live member's utime+stime plus the cutime+cstime of
    the children it has reaped (so processes that already exited still count, as long as
    their parent waited for them)."""
    return sum(tree(root).values()) / CLK_TCK


def _kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_mem(root):
    """(RSS KiB summed, PSS KiB summed, number of processes) over the tree."""
    pids = list(tree(root))
    rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss, pss, len(pids)


def wait_tree_size(root, at_most, timeout):
    """Waits until the tree has at most `at_most` processes; returns the final size."""
    end = time.time() + timeout
    while True:
        n = len(tree(root))
        if n <= at_most or time.time() > end:
            return n
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# IMAP client bits
# ---------------------------------------------------------------------------------------------

class Target:
    def __init__(self, spec):
        parts = spec.split(",")
        self.name = parts[0]
        kv = dict(p.split("=", 1) for p in parts[1:])
        self.host = kv.get("host", "127.0.0.1")
        self.port = int(kv["port"])
        self.tls = kv.get("tls", "0") in ("1", "yes", "true")
        self.pid = int(kv["pid"]) if "pid" in kv else None
        self.base = kv.get("base")


def ssl_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    return ctx


async def connect(host, port, ctx):
    if ctx:
        return await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost",
                                             limit=1 << 20)
    return await asyncio.open_connection(host, port, limit=1 << 20)


async def until_tagged(reader, tag):
    """Reads lines until the one tagged `tag`; returns it (raises on EOF)."""
    prefix = tag + b" "
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"EOF waiting for {tag!r}")
        if line.startswith(prefix):
            return line


async def open_session(t, ctx):
    reader, writer = await connect(t.host, t.port, ctx)
    greeting = await reader.readline()
    if not greeting.startswith(b"* OK"):
        raise ConnectionError(f"greeting {greeting!r}")
    writer.write(f"a LOGIN {USER} {PASSWORD}\r\n".encode())
    line = await until_tagged(reader, b"a")
    if not line.startswith(b"a OK"):
        raise ConnectionError(f"LOGIN {line!r}")
    return reader, writer


def close(writer):
    try:
        writer.transport.abort()
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# Scenario 1: login rate
# ---------------------------------------------------------------------------------------------

async def login_client(t, ctx, deadline, lat, errors):
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        writer = None
        try:
            reader, writer = await open_session(t, ctx)
            lat.append(time.perf_counter() - t0)
            writer.write(b"b LOGOUT\r\n")
            try:
                await until_tagged(reader, b"b")
            except ConnectionError:
                pass  # closed right after the BYE: fine
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass
        except Exception as e:  # noqa: BLE001 - count and go on
            errors.append(f"{type(e).__name__}: {e}")
            if writer:
                close(writer)
            await asyncio.sleep(0.05)


def login_worker(args):
    spec, ca, clients, deadline_wall = args
    t = Target(spec)
    ctx = ssl_context(ca) if t.tls else None
    lat, errors = [], []

    async def main():
        deadline = time.monotonic() + (deadline_wall - time.time())
        await asyncio.gather(*(login_client(t, ctx, deadline, lat, errors)
                               for _ in range(clients)))

    asyncio.run(main())
    return lat, errors[:20], len(errors)


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, int(round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def scenario_login(t, spec, opts):
    procs = max(1, min(opts.procs, opts.clients))
    per = [opts.clients // procs + (1 if i < opts.clients % procs else 0) for i in range(procs)]
    baseline_n = len(tree(t.pid)) if t.pid else 0
    dc_base_n = len(tree(opts.dovecot_pid)) if opts.dovecot_pid else 0
    cpu0 = tree_cpu(t.pid) if t.pid else None
    dc0 = tree_cpu(opts.dovecot_pid) if opts.dovecot_pid else None
    start = time.time()
    deadline = start + opts.duration
    with multiprocessing.Pool(procs) as pool:
        results = pool.map(login_worker, [(spec, opts.ca, n, deadline) for n in per])
    elapsed = time.time() - start
    # Let per-session processes (perdition children, Dovecot imap) exit and be reaped.
    if t.pid:
        wait_tree_size(t.pid, baseline_n, 10)
    if opts.dovecot_pid:
        wait_tree_size(opts.dovecot_pid, dc_base_n, 10)
    lat = sorted(x for r in results for x in r[0])
    nerr = sum(r[2] for r in results)
    samples = [e for r in results for e in r[1]][:5]
    n = len(lat)
    res = {
        "logins": n,
        "seconds": round(elapsed, 2),
        "logins_per_s": n / opts.duration,
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "errors": nerr,
        "error_samples": samples,
    }
    if t.pid and n:
        res["cpu_ms_per_1000"] = (tree_cpu(t.pid) - cpu0) / n * 1e6
    if opts.dovecot_pid and n:
        res["dovecot_cpu_ms_per_1000"] = (tree_cpu(opts.dovecot_pid) - dc0) / n * 1e6
    return res


# ---------------------------------------------------------------------------------------------
# Scenario 2: FETCH throughput
# ---------------------------------------------------------------------------------------------

class SyncConn:
    """Blocking client for the FETCH scenario: big reads (MSG_WAITALL on plain sockets) so
    that the Python client is not what limits the throughput."""

    def __init__(self, t, ctx):
        import socket
        self.sock = socket.create_connection((t.host, t.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx:
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.tls = ctx is not None
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("EOF")
            self.buf += chunk

    def read_exactly(self, n, into):
        """Reads n bytes into the preallocated memoryview `into`."""
        import socket
        have = min(n, len(self.buf))
        into[:have] = self.buf[:have]
        del self.buf[:have]
        while have < n:
            if self.tls:
                got = self.sock.recv_into(into[have:n], n - have)
            else:
                got = self.sock.recv_into(into[have:n], n - have, socket.MSG_WAITALL)
            if not got:
                raise ConnectionError("EOF in literal")
            have += got

    def until_tagged(self, tag):
        while True:
            line = self.readline()
            if line.startswith(tag + b" "):
                return line


def scenario_fetch(t, opts):
    ctx = ssl_context(opts.ca) if t.tls else None
    c = SyncConn(t, ctx)
    tls = f"{c.sock.version()} {c.sock.cipher()[0]}" if ctx else None
    if not c.readline().startswith(b"* OK"):
        raise ConnectionError("greeting")
    # One command at a time: perdition 2.2 loses commands pipelined behind LOGIN (it hangs).
    c.send(f"a LOGIN {USER} {PASSWORD}\r\n".encode())
    if not c.until_tagged(b"a").startswith(b"a OK"):
        raise ConnectionError("LOGIN failed")
    c.send(b"s EXAMINE INBOX\r\n")
    if not c.until_tagged(b"s").startswith(b"s OK"):
        raise ConnectionError("EXAMINE failed")
    c.send(b"z FETCH 1:* RFC822.SIZE\r\n")
    best, size = None, 0
    while True:
        line = c.readline()
        if line.startswith(b"z "):
            break
        if b"RFC822.SIZE" in line:
            seq = int(line.split()[1])
            sz = int(line.split(b"RFC822.SIZE ")[1].split(b")")[0])
            if sz > size:
                best, size = seq, sz
    sink = memoryview(bytearray(size + 65536))

    def one(tag):
        c.send(f"{tag} FETCH {best} BODY.PEEK[]\r\n".encode())
        got = 0
        while True:
            line = c.readline()
            if line.startswith(tag.encode() + b" "):
                if not line.startswith(tag.encode() + b" OK"):
                    raise ConnectionError(f"FETCH: {line!r}")
                return got
            if line.rstrip().endswith(b"}") and b"{" in line:
                n = int(line.rstrip()[line.rindex(b"{") + 1:-1].rstrip(b"+"))
                c.read_exactly(n, sink)
                got += n

    if one("w") != size:  # warm-up (page cache, process start)
        raise ConnectionError("short FETCH")
    # CPU is read while the session is alive (perdition: its per-session child counts).
    cpu0 = tree_cpu(t.pid) if t.pid else None
    t0 = time.perf_counter()
    total = 0
    for i in range(opts.fetches):
        total += one(f"f{i}")
    dt = time.perf_counter() - t0
    cpu1 = tree_cpu(t.pid) if t.pid else None
    c.send(b"q LOGOUT\r\n")
    c.sock.close()
    res = {"tls": tls, "message_bytes": size, "bytes": total, "seconds": round(dt, 3),
           "mib_per_s": total / dt / (1 << 20)}
    if t.pid:
        res["cpu_ms_per_mib"] = (cpu1 - cpu0) * 1000 / (total / (1 << 20))
    return res


# ---------------------------------------------------------------------------------------------
# Scenario 3: idle sessions
# ---------------------------------------------------------------------------------------------

async def idle_open(t, ctx, sem, sessions, errors):
    async with sem:
        writer = None
        try:
            reader, writer = await open_session(t, ctx)
            writer.write(b"s SELECT INBOX\r\n")
            if not (await until_tagged(reader, b"s")).startswith(b"s OK"):
                raise ConnectionError("SELECT failed")
            writer.write(b"i IDLE\r\n")
            line = await reader.readline()
            if not line.startswith(b"+"):
                raise ConnectionError(f"IDLE: {line!r}")
            sessions.append(writer)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
            if writer:
                close(writer)


async def idle_run(t, opts, measure):
    ctx = ssl_context(opts.ca) if t.tls else None
    sem = asyncio.Semaphore(opts.idle_parallel)
    sessions, errors = [], []
    t0 = time.perf_counter()
    await asyncio.gather(*(idle_open(t, ctx, sem, sessions, errors) for _ in range(opts.idle)))
    open_s = time.perf_counter() - t0
    await asyncio.sleep(opts.settle)
    during = measure()
    for w in sessions:
        close(w)
    await asyncio.sleep(0.2)
    return len(sessions), errors, open_s, during


def scenario_idle(t, opts):
    dc = opts.dovecot_pid
    n0 = len(tree(t.pid))
    dc_n0 = len(tree(dc)) if dc else 0
    time.sleep(opts.settle)
    before = tree_mem(t.pid)
    dc_before = tree_mem(dc) if dc else None

    def measure():
        return tree_mem(t.pid), (tree_mem(dc) if dc else None)

    n, errors, open_s, (during, dc_during) = asyncio.run(idle_run(t, opts, measure))
    # Wait for the sessions to go away everywhere before the next target.
    wait_tree_size(t.pid, n0, 60)
    if dc:
        wait_tree_size(dc, dc_n0, 60)
    time.sleep(opts.settle)
    after = tree_mem(t.pid)
    res = {
        "sessions": n,
        "errors": len(errors),
        "error_samples": errors[:5],
        "open_seconds": round(open_s, 2),
        "before_kib": {"rss": before[0], "pss": before[1], "procs": before[2]},
        "during_kib": {"rss": during[0], "pss": during[1], "procs": during[2]},
        "after_close_kib": {"rss": after[0], "pss": after[1], "procs": after[2]},
    }
    if n:
        res["rss_kib_per_session"] = (during[0] - before[0]) / n
        res["pss_kib_per_session"] = (during[1] - before[1]) / n
        if dc:
            res["dovecot_pss_kib_per_session"] = (dc_during[1] - dc_before[1]) / n
    return res


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, float) and v != v:
        return "nan"
    return f"{v:,.{nd}f}"


def ratio(v, b):
    if v is None or b in (None, 0) or v != v or b != b:
        return ""
    return f" ({v / b:.2f}×)"


def report(targets, results, opts):
    by = {t.name: results[t.name] for t in targets}
    lines = []
    hdr = ("| front end | logins/s | p50 ms | p99 ms | login errors | front-end CPU ms / 1000 logins "
           "| Dovecot CPU ms / 1000 logins | FETCH MiB/s | front-end CPU ms / MiB "
           "| idle KiB/session RSS | idle KiB/session PSS |")
    lines.append(hdr)
    lines.append("|" + "|".join(["---"] * (hdr.count("|") - 1)) + "|")
    for t in targets:
        r = by[t.name]
        b = by.get(t.base) if t.base else None
        lg, fe, idl = r.get("login", {}), r.get("fetch", {}), r.get("idle", {})
        blg = (b or {}).get("login", {})
        bfe = (b or {}).get("fetch", {})
        direct = t.base is None
        row = [
            t.name + (" (direct)" if direct else ""),
            fmt(lg.get("logins_per_s")) + ratio(lg.get("logins_per_s"), blg.get("logins_per_s")),
            fmt(lg.get("p50_ms"), 2) + ratio(lg.get("p50_ms"), blg.get("p50_ms")),
            fmt(lg.get("p99_ms"), 2) + ratio(lg.get("p99_ms"), blg.get("p99_ms")),
            fmt(lg.get("errors")) if lg else "–",
            "(Dovecot itself)" if direct else fmt(lg.get("cpu_ms_per_1000")),
            fmt(lg.get("dovecot_cpu_ms_per_1000")),
            fmt(fe.get("mib_per_s")) + ratio(fe.get("mib_per_s"), bfe.get("mib_per_s")),
            "–" if direct else fmt(fe.get("cpu_ms_per_mib"), 2),
            fmt(idl.get("rss_kib_per_session"), 1),
            fmt(idl.get("pss_kib_per_session"), 1),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"login: {opts.clients} clients x {opts.duration:g} s ({opts.procs} client processes); "
                 f"fetch: {opts.fetches} x {fmt(next((by[t.name].get('fetch', {}).get('message_bytes') for t in targets if by[t.name].get('fetch')), None))} bytes; "
                 f"idle: {opts.idle} sessions (LOGIN + SELECT + IDLE). Ratios: vs the direct Dovecot row "
                 f"of the same transport. Direct rows: the idle columns are Dovecot's own cost.")
    # Portcullis vs perdition, where both are present.
    for a, c in (("portcullis", "perdition"), ("portcullis-tls", "perdition-tls")):
        if a in by and c in by:
            ra, rc = by[a], by[c]
            bits = []
            for label, sect, key in (("logins/s", "login", "logins_per_s"),
                                     ("CPU/login", "login", "cpu_ms_per_1000"),
                                     ("MiB/s", "fetch", "mib_per_s"),
                                     ("idle PSS/session", "idle", "pss_kib_per_session")):
                va, vc = ra.get(sect, {}).get(key), rc.get(sect, {}).get(key)
                if va and vc:
                    bits.append(f"{label} {va / vc:.2f}×")
            if bits:
                lines.append(f"{a} / {c}: " + ", ".join(bits))
    return "\n".join(lines)


def bench(opts):
    targets = [Target(s) for s in opts.target]
    specs = {t.name: s for t, s in zip(targets, opts.target)}
    results = {t.name: {} for t in targets}
    scen = set(opts.scenarios.split(","))
    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
           "uname": " ".join(os.uname()), "options": vars(opts)}
    # Scenario-major order: every target gets the same conditions for one scenario.
    if "login" in scen:
        for t in targets:
            log(f"[login] {t.name}: {opts.clients} clients for {opts.duration:g} s")
            r = scenario_login(t, specs[t.name], opts)
            results[t.name]["login"] = r
            log(f"        {r['logins_per_s']:.0f} logins/s p50 {r['p50_ms']:.2f} ms "
                f"p99 {r['p99_ms']:.2f} ms errors {r['errors']} {r['error_samples'][:1]}")
            time.sleep(opts.pause)
    if "fetch" in scen:
        for t in targets:
            log(f"[fetch] {t.name}: {opts.fetches} FETCHes")
            r = scenario_fetch(t, opts)
            results[t.name]["fetch"] = r
            log(f"        {r['mib_per_s']:.0f} MiB/s" + (f" ({r['tls']})" if r["tls"] else ""))
    if "idle" in scen:
        for t in targets:
            log(f"[idle]  {t.name}: {opts.idle} idle sessions")
            r = scenario_idle(t, opts)
            results[t.name]["idle"] = r
            log(f"        {r['sessions']} open ({r['errors']} errors) in {r['open_seconds']} s; "
                f"RSS {r['before_kib']['rss']} -> {r['during_kib']['rss']} KiB, "
                f"PSS {r['before_kib']['pss']} -> {r['during_kib']['pss']} KiB, "
                f"after close RSS {r['after_close_kib']['rss']} KiB")
            time.sleep(opts.pause)
    table = report(targets, results, opts)
    print()
    print(f"Portcullis benchmark, {env['date']}, {env['cpus']} CPUs, {env['uname']}")
    print()
    print(table)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"env": env, "results": results, "table": table}, f, indent=1, default=str)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("seed", help="write the bench messages into a Maildir cur/ directory")
    sp.add_argument("cur")
    bp = sub.add_parser("bench", help="run the scenarios")
    bp.add_argument("--target", action="append", required=True, help="NAME,port=P[,tls=1][,pid=PID][,base=NAME]")
    bp.add_argument("--ca", help="CA file for TLS targets")
    bp.add_argument("--dovecot-pid", type=int, help="Dovecot master pid (its tree's CPU/memory is metered too)")
    bp.add_argument("--scenarios", default="login,fetch,idle")
    bp.add_argument("--clients", type=int, default=16, help="login: concurrent clients (default 16)")
    bp.add_argument("--procs", type=int, default=1, help="login: client processes sharing the clients (default 1)")
    bp.add_argument("--duration", type=float, default=6, help="login: seconds per target (default 6)")
    bp.add_argument("--fetches", type=int, default=100, help="fetch: FETCHes of the 1 MiB message (default 100)")
    bp.add_argument("--idle", type=int, default=500, help="idle: sessions (default 500)")
    bp.add_argument("--idle-parallel", type=int, default=32, help="idle: sessions being opened at once")
    bp.add_argument("--settle", type=float, default=1.0, help="idle: seconds to settle before measuring")
    bp.add_argument("--pause", type=float, default=1.0, help="seconds between targets")
    bp.add_argument("--json", help="write all results here")
    opts = ap.parse_args()
    if opts.cmd == "seed":
        seed(opts.cur)
    else:
        bench(opts)


if __name__ == "__main__":
    main()
