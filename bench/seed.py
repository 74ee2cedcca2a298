#!/usr/bin/env python3
"""Write the benchmark's messages into a Maildir cur/ directory.

    seed.py MAILDIR_CUR [--big-mib N]

Always a small message and one of ~1 MiB (the bytes of the test harness's big message); with
--big-mib N also one of N MiB, which the FETCH benchmark then picks (it fetches the largest).
The lines are numbered and hashed so that nothing compresses or deduplicates them away.
"""
import argparse
import os


def lines(size, subject, msgid):
    head = (
        "From: Bob <bob@example.org>\n"
        "To: Alice <alice@example.org>\n"
        f"Subject: {subject}\n"
        "Date: Wed, 22 Nov 2023 12:00:00 +0000\n"
        f"Message-ID: <{msgid}@portcullis.test>\n"
        "\n"
    ).replace("\n", "\r\n").encode()
    out = bytearray(head)
    i = 0
    while len(out) < size:
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cur", help="the Maildir's cur/ directory")
    ap.add_argument("--big-mib", type=int, default=0, help="also write a message of this many MiB")
    opts = ap.parse_args()
    messages = [small_message(), lines(1 << 20, "Big message", "msg3")]
    if opts.big_mib > 0:
        messages.append(lines(opts.big_mib << 20, f"{opts.big_mib} MiB message", "msg4"))
    for i, msg in enumerate(messages):
        name = f"{1700000000 + i}.M{i + 1}P1.bench,S={len(msg)},W={len(msg)}:2,S"
        with open(os.path.join(opts.cur, name), "wb") as f:
            f.write(msg)


if __name__ == "__main__":
    main()
