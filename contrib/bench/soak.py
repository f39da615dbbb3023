#!/usr/bin/env python3
"""Memory soak: SESSIONS concurrent SMTP clients on loopback, each sending a DATA body of
100 B to 2 MB drawn from a troublesome alphabet (dots, bare CR/LF, NUL — so most are refused
after DATA) for SECONDS, while the relay's RSS is sampled every 15 s; then its idle RSS.
A relay that keeps what it freed shows here (issue 13: glibc's dynamic mmap threshold).

usage: soak.py PORT PID [SECONDS=120] [SESSIONS=50]
Sends only to 127.0.0.1:PORT. Every loop is bounded by SECONDS.
"""
import json
import random
import socket
import sys
import threading
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def client(port, seed, stop, count):
    chooser = random.Random(seed)
    while time.monotonic() < stop:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.settimeout(2)
                sock.recv(1000)
                sock.sendall(b"EHLO soak\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n")
                time.sleep(0.05)
                size = chooser.choice([100, 10_000, 200_000, 2_000_000])
                chunk = bytes(chooser.choice(b"ab.\r\n\x00 xyz") for _ in range(4096))
                sock.sendall((chunk * (size // 4096 + 1))[:size])
                if chooser.random() < 0.5:
                    sock.sendall(b"\r\n.\r\nQUIT\r\n")
                try:
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass
            count[0] += 1
        except OSError:
            time.sleep(0.01)


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 120
    sessions = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    stop = time.monotonic() + seconds
    count = [0]
    threads = [threading.Thread(target=client, args=(port, n, stop, count)) for n in range(sessions)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    samples = []
    while time.monotonic() < stop:
        samples.append((round(time.monotonic() - started), rss_mib(pid)))
        time.sleep(min(15, max(0.0, stop - time.monotonic())))
    for thread in threads:
        thread.join(timeout=30)
    time.sleep(3)
    print(json.dumps({"sessions": count[0], "rss_mib_during": samples, "rss_mib_idle_after": rss_mib(pid)}))


if __name__ == "__main__":
    main()
