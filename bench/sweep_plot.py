#!/usr/bin/env python3
"""Latency against load for every row of a sweep, one SVG per transport.

bench/compare.sh's `sweep` mode leaves one JSON per row and transport in
$BENCH_DIR/results/sweep/ (`<target>-<plain|tls>.json`, one logins step per client count).
This draws them side by side: clients on a log axis, p50 (solid) and p99 (dashed) login
latency, one colour per row, so that the rows of one run can be compared at a glance.

    python3 bench/sweep_plot.py DIR          # writes DIR/logins-plain.svg, DIR/logins-tls.svg
"""

import json
import math
import sys
from pathlib import Path

COLOURS = {
    "portcullis": "#1f77b4",
    "nginx": "#2ca02c",
    "dovecot": "#7f7f7f",
    "dovecot-proxy": "#9467bd",
    "perdition": "#d62728",
}
W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 150, 40, 50


def rows(directory, transport):
    """(target, [(clients, p50, p99, logins/s)]) for every JSON of this transport."""
    found = []
    for path in sorted(Path(directory).glob(f"*-{transport}.json")):
        target = path.name[: -len(f"-{transport}.json")]
        data = json.loads(path.read_text())
        steps = [
            (s["clients"], s["latency"]["p50_ms"], s["latency"]["p99_ms"], s["logins_per_s"])
            for s in data.get("logins") or []
            if s.get("latency") and s["latency"].get("count")
        ]
        if steps:
            found.append((target, sorted(steps)))
    return found


def plot(title, found):
    clients = sorted({c for _, steps in found for c, *_ in steps})
    top = max(p99 for _, steps in found for _, _, p99, _ in steps) * 1.1
    lo, hi = math.log2(clients[0]), math.log2(clients[-1])
    span = (hi - lo) or 1.0

    def x(c):
        return LEFT + (math.log2(c) - lo) / span * (W - LEFT - RIGHT)

    def y(ms):
        return H - BOTTOM - ms / top * (H - TOP - BOTTOM)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="black"/>',
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">'
        "concurrent clients (closed loop)</text>",
        f'<text x="16" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(TOP + H - BOTTOM) / 2})">login latency, ms</text>',
    ]
    for c in clients:
        out.append(f'<text x="{x(c):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{c}</text>')
    for i in range(6):
        ms = top * i / 5
        out.append(
            f'<line x1="{LEFT}" y1="{y(ms):.1f}" x2="{W - RIGHT}" y2="{y(ms):.1f}" '
            'stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms:.0f}</text>')
    for i, (target, steps) in enumerate(found):
        colour = COLOURS.get(target, "#ff7f0e")
        for index, dash in ((1, ""), (2, ' stroke-dasharray="5,4"')):
            points = " ".join(f"{x(s[0]):.1f},{y(s[index]):.1f}" for s in steps)
            out.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" '
                f'stroke-width="2"{dash}/>'
            )
        ly = TOP + 20 * i
        out.append(
            f'<line x1="{W - RIGHT + 10}" y1="{ly}" x2="{W - RIGHT + 30}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{W - RIGHT + 36}" y="{ly + 4}">{target}</text>')
    ly = TOP + 20 * len(found) + 10
    out.append(f'<text x="{W - RIGHT + 10}" y="{ly}">solid: p50</text>')
    out.append(f'<text x="{W - RIGHT + 10}" y="{ly + 16}">dashed: p99</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = Path(sys.argv[1])
    for transport, words in (("plain", "plain"), ("tls", "TLS, full handshakes")):
        found = rows(directory, transport)
        if not found:
            print(f"sweep_plot: no {transport} rows in {directory}", file=sys.stderr)
            continue
        out = directory / f"logins-{transport}.svg"
        out.write_text(plot(f"IMAP logins, {words}: latency against load", found))
        print(out)


if __name__ == "__main__":
    main()
