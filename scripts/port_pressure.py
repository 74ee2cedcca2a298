#!/usr/bin/env python3
"""Load the kernel's ephemeral ports the way a busy machine does, to reproduce port races.

  python3 scripts/port_pressure.py [SECONDS] [OPEN]

Opens outgoing loopback connections as fast as it can for SECONDS (default 600), keeping up to
OPEN (default 3000) of them open at a time and closing the oldest first: every one holds a port
of /proc/sys/net/ipv4/ip_local_port_range while open, and in TIME_WAIT a while after. A test
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

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
address = listener.getsockname()


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
    while len(opened) > keep:
        opened.popleft().close()
print(f"port_pressure: {count} connections in {seconds:.0f} s", file=sys.stderr)
