#!/usr/bin/env python3
"""Open COUNT connections spread over source addresses 127.0.0.FIRST..LAST and say nothing:
the silent half of a connection flood. Prints one JSON line once every connection is made
(how many got a session, i.e. a 220 greeting, and how many were turned away with 421), then
holds the sessions open until standard input closes.

usage: silent_flood.py PORT COUNT FIRST LAST
"""
import json
import resource
import socket
import sys


def main():
    port, count, first, last = (int(a) for a in sys.argv[1:5])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 64)), hard))
    sources = [f"127.0.0.{n}" for n in range(first, last + 1)]
    held, refused, failed = [], 0, 0
    for n in range(count):
        sock = socket.socket()
        sock.settimeout(10)
        try:
            sock.bind((sources[n % len(sources)], 0))
            sock.connect(("127.0.0.1", port))
            greeting = sock.recv(512)
        except OSError:
            failed += 1
            sock.close()
            continue
        if greeting.startswith(b"220"):
            held.append(sock)
        else:
            refused += 1
            sock.close()
    print(json.dumps({"sessions": len(held), "refused": refused, "failed": failed}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
