#!/usr/bin/env python3
"""A peer's `sendmail` (and queue daemon) run inside a private mount namespace.

bench.py runs this as `unshare --mount --propagation private python3 in_namespace.py MODE
SPEC.json`, so
that a peer extracted from its Debian package (`apt-get download` + `dpkg -x`) finds its
compiled-in paths (/etc/nullmailer, /var/spool/dma, /usr/sbin/sendmail…) without the
system being touched: each of those directories becomes an overlay whose upper layer is in
the benchmark's work directory, and whose lower layers are the package's files over the
system's. Everything vanishes with the namespace.

SPEC: {"overlays": [[mountpoint, [extra lower dirs, first wins]]], "work": DIR,
       "files": {path: text}, "dirs": [[path, user, group, mode]], "fifos": [[path, user, mode]],
       "command": [...], "runs": N, "user": optional user name to run the command as,
       "daemon": optional [...] started first (nullmailer-send), "flush": optional [...]}

MODE handoff: times `runs` submissions as cron makes them; prints {"median_ms", "p99_ms", "runs"}.
MODE serve: starts the daemon, prints {"started": true}, and stops it at a line on standard
input (OpenSMTPD as a relay).
MODE backlog: starts the daemon, submits `runs` messages (8 at a time), prints {"filled": N},
then waits for a line on standard input, runs the flush command (or writes to the "trigger"
FIFO), prints {"flushed": true}, and on the next line stops the daemon and exits.
"""
import concurrent.futures
import grp
import json
import os
import pwd
import statistics
import subprocess
import sys
import time

MESSAGE = b"Subject: cron\nFrom: root\n\nbackup done\n"


def main():
    spec = json.load(open(sys.argv[2]))
    work = spec["work"]
    for index, (mountpoint, lowers) in enumerate(spec.get("overlays", [])):
        upper = os.path.join(work, f"overlay{index}", "upper")
        scratch = os.path.join(work, f"overlay{index}", "work")
        os.makedirs(upper, exist_ok=True)
        os.makedirs(scratch, exist_ok=True)
        lowerdir = ":".join(lowers + [mountpoint])
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lowerdir},upperdir={upper},workdir={scratch}", mountpoint],
                       check=True)
    for path, user, group, mode in spec.get("dirs", []):
        os.makedirs(path, exist_ok=True)
        os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
        os.chmod(path, int(mode, 8))
    for path, user, mode in spec.get("fifos", []):
        if not os.path.exists(path):
            os.mkfifo(path)
        os.chown(path, pwd.getpwnam(user).pw_uid, -1)
        os.chmod(path, int(mode, 8))
    for path, text in spec.get("files", {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    # Lines added to a file of the overlay (users in /etc/passwd that only the namespace has).
    for path, text in spec.get("append", {}).items():
        with open(path, "a") as f:
            f.write(text)
    {"handoff": handoff, "backlog": backlog, "serve": serve}[sys.argv[1]](spec)


def submit(spec):
    user = spec.get("user")
    started = time.perf_counter()
    result = subprocess.run(spec["command"], input=MESSAGE, capture_output=True, timeout=60,
                            user=user, group=(pwd.getpwnam(user).pw_gid if user else None),
                            extra_groups=([] if user else None))
    if result.returncode != 0:
        sys.exit(f"{spec['command']} exited {result.returncode}: {result.stderr.decode(errors='replace')}")
    return (time.perf_counter() - started) * 1000


def handoff(spec):
    times = sorted(submit(spec) for _ in range(spec["runs"]))
    json.dump({"median_ms": statistics.median(times),
               "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
               "runs": len(times)}, sys.stdout)


def start_daemon(spec):
    return subprocess.Popen(spec["daemon"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop_daemon(daemon):
    daemon.terminate()
    try:
        daemon.wait(timeout=20)
    except subprocess.TimeoutExpired:
        daemon.kill()


def serve(spec):
    daemon = start_daemon(spec)
    print(json.dumps({"started": True}), flush=True)
    sys.stdin.readline()
    stop_daemon(daemon)


def backlog(spec):
    daemon = start_daemon(spec) if spec.get("daemon") else None
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: submit(spec), range(spec["runs"])))
    print(json.dumps({"filled": spec["runs"]}), flush=True)
    sys.stdin.readline()
    if spec.get("flush"):
        subprocess.run(spec["flush"], check=True, capture_output=True, timeout=3600)
    if spec.get("trigger"):
        fd = os.open(spec["trigger"], os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"\n")
        os.close(fd)
    print(json.dumps({"flushed": True}), flush=True)
    sys.stdin.readline()
    if daemon:
        stop_daemon(daemon)


if __name__ == "__main__":
    main()
