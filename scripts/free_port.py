#!/usr/bin/env python3
"""Print a loopback TCP port for a server a test script is about to start.

The same choice as the Rust harness's free_port() (tests/support/ports.rs): a port outside
the kernel's ephemeral range (so that no outgoing connection of any program can take it), that
binds now on 127.0.0.1, 0.0.0.0 and [::], and whose lock file under
$TMPDIR/portcullis-test-ports-UID/ no test process holds. This script cannot hold the lock for the
server it prints the port for, so its callers retry on a new port when the server does not come
up (scripts/test.sh, tests/support/databases.sh).
"""
import errno
import fcntl
import os
import random
import socket
import sys
import tempfile

LOWEST = 10000


def test_range():
    text = os.environ.get("PORTCULLIS_TEST_PORTS")
    if text:
        low, high = (int(x) for x in text.split("-", 1))
        return low, high
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split()[:2])
    except OSError:
        low, high = 32768, 60999
    if low >= LOWEST + 1000:
        return LOWEST, low - 1
    if high <= 65535 - 1000:
        return high + 1, 65535
    sys.exit(f"ephemeral range {low}-{high} leaves no room: set PORTCULLIS_TEST_PORTS=LOW-HIGH")


def unlocked(port):
    path = os.path.join(tempfile.gettempdir(), f"portcullis-test-ports-{os.geteuid()}", str(port))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True  # never reserved
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def bindable(port):
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"),
                         (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
        except OSError as e:
            if family == socket.AF_INET6 and e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                continue
            return False
        finally:
            s.close()
    return True


def main():
    low, high = test_range()
    ports = list(range(low, high + 1))
    start = random.randrange(len(ports))
    for port in ports[start:] + ports[:start]:
        if unlocked(port) and bindable(port):
            print(port)
            return
    sys.exit(f"no free port in {low}-{high}")


main()
