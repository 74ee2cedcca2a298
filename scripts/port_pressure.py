#!/usr/bin/env python3
"""Load the kernel's ephemeral ports the way a busy machine does, to reproduce port races.

  python3 scripts/port_pressure.py [SECONDS] [OPEN] [ADDRESS] [RATE]

Opens outgoing connections to a listener of its own on ADDRESS (default: this machine's first
non-loopback address, else 127.0.0.1) as fast as it can for SECONDS (default 600), keeping up
to OPEN (default 3000) of them open at a time and closing the oldest first: every one holds a
port of /proc/sys/net/ipv4/ip_local_port_range while open, and in TIME_WAIT for a minute after.
(Linux reuses a TIME_WAIT port at once for a connection to a 127.x address, tcp_tw_reuse=2, and
takes even ports for connect() while binds to port 0 get odd ones: to a 127.x address the load
hardly reaches the ports a test picks. To the machine's own address, still over the loopback
device, the range fills up and connect() moves into the odd ports too.) RATE (connections a
second, default unlimited) keeps the range from filling up altogether: OPEN + 60 * RATE ports
are taken at any time, and once that passes the range's size every outgoing connection on the
machine fails, the tests' too. A test
that picks a port by binding port 0 and letting go of it (a port of that same range) and has a
server bind it a moment later loses the port now and then under this load; see
tests/support/ports.rs for how the suite avoids that.
"""
import collections
import socket
import sys
import threading
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600
keep = int(sys.argv[2]) if len(sys.argv) > 2 else 3000


def own_address():
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("192.0.2.1", 9))  # no packet is sent: only a route is looked up
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


target = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else own_address()
rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0
listener = socket.socket()
listener.bind((target, 0))
listener.listen(4096)
address = listener.getsockname()
print(f"port_pressure: connecting to {address[0]}:{address[1]}", file=sys.stderr)


def accept():
    held = collections.deque()
    while True:
        conn, _ = listener.accept()
        held.append(conn)
        while len(held) > keep:
            held.popleft().close()


threading.Thread(target=accept, daemon=True).start()
opened = collections.deque()
count = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        s = socket.create_connection(address, 1)
    except OSError:
        time.sleep(0.01)
        continue
    opened.append(s)
    count += 1
    if rate:
        time.sleep(1 / rate)
    while len(opened) > keep:
        opened.popleft().close()
print(f"port_pressure: {count} connections in {seconds:.0f} s", file=sys.stderr)
