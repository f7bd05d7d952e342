#!/usr/bin/env python3
"""Sends every frame of a file out of one interface through an AF_PACKET socket.

Usage: inject.py IFNAME FRAMES_FILE

The file is a sequence of records: a 2-byte big-endian length, then that many bytes of
Ethernet frame. The process pins itself to CPU 0 first: veth delivers each frame in the
sender's softirq on the sending CPU, so one pinned sender keeps the kernel's processing order
equal to the file order (rate limits, quotas and meters depend on it) and makes `meta cpu` 0.
Prints the number of frames sent.
"""
import os
import socket
import sys


def main() -> int:
    ifname, path = sys.argv[1], sys.argv[2]
    os.sched_setaffinity(0, {0})
    with open(path, "rb") as f:
        data = memoryview(f.read())
    # Protocol 0: this socket only sends; it receives nothing.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((ifname, 0))
    send = s.send
    off, n, end = 0, 0, len(data)
    while off < end:
        length = (data[off] << 8) | data[off + 1]
        off += 2
        sent = send(data[off:off + length])
        if sent != length:
            print(f"short send: {sent} of {length} bytes", file=sys.stderr)
            return 1
        off += length
        n += 1
    print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
