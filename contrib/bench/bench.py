#!/usr/bin/env python3
"""smarthost against Postfix and the small sendmail replacements (nullmailer, dma, msmtp: see
peers.py), on this machine, in one run.

For each scenario and each of at least three rounds it measures, alternating, the ceiling
(smtp-source -> smtp-sink), Postfix as the relay (smtp-source -> Postfix -> smtp-sink) and
smarthost as the relay (smtp-source -> smarthost -> smtp-sink, upstream TLS off, loopback),
on its SQLite spool and, for the 1- and 20-session scenarios, on a private PostgreSQL
(initdb into the work directory, Unix socket only, default durability: fsync and
synchronous_commit on) as one node and as two nodes sharing it (smtp-source split between
them). Figures are medians. Everything runs on 127.0.0.1; every process started is stopped
by PID; every wait is bounded.

usage: bench.py --smarthost target/release/smarthost [--quick] [--out DIR]
Prints a Markdown table and writes results.md and results.json to --out.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

POSTFIX_MAIN_CF = """compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink}
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
local_recipient_maps =
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
smtpd_relay_restrictions = permit_mynetworks, reject
"""

SMARTHOST_CONFIG = """hostname = "smarthost.bench.test"
[smtp]
listen = "127.0.0.1:{port}"
max_connections = 1000
max_connections_per_ip = 1000
[spool]
path = "{dir}/spool.db"
{spool_url}
[delivery]
connections = {connections}
# The daemon's preflight runs as in production, but asks a loopback port nobody answers on
# (never the machine's resolver): its checks end in temperror, nothing is held.
[dns]
nameservers = ["127.0.0.1:{dns}"]
timeout = "200ms"
[metrics]
listen = "127.0.0.1:{metrics}"
[[upstream]]
host = "127.0.0.1"
port = {sink}
tls = "none"
"""


# How long a backlog flush may deliver nothing before it counts as done (see backlog_drain).
STALLED_AFTER = 20.0

# Parallel deliveries for smarthost: Postfix's default_destination_concurrency_limit is 20.
CONNECTIONS = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, limit=20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {limit}s")


def stop(process):
    if process and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Sink:
    """smtp-sink counting delivered messages (its -c counter on stdout)."""

    def __init__(self, workdir, port=None):
        self.port = port or free_port()
        self.out = open(workdir / f"sink-{self.port}.out", "w+")
        self.process = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{self.port}", "1024"],
            stdout=self.out, stderr=subprocess.STDOUT)
        wait_listening(self.port)

    def count(self):
        self.out.flush()
        with open(self.out.name) as f:
            text = f.read()
        tail = text.replace("\r", "\n").strip().splitlines()
        for line in reversed(tail):
            for word in line.split():
                if word.startswith("mesg="):
                    return int(word[5:])
        return 0

    def wait_for(self, count, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.count() >= count:
                return True
            time.sleep(0.02)
        return False

    def close(self):
        stop(self.process)
        self.out.close()


class Postfix:
    def __init__(self, workdir, sink_port):
        self.dir = workdir / "postfix"
        shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("etc", "queue", "data"):
            (self.dir / sub).mkdir(parents=True)
        shutil.chown(self.dir / "data", "postfix")
        self.port = free_port()
        (self.dir / "etc" / "main.cf").write_text(POSTFIX_MAIN_CF.format(dir=self.dir, sink=sink_port))
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        master = [f"127.0.0.1:{self.port} inet n - n - - smtpd" if l.startswith("smtp      inet") else l for l in master]
        (self.dir / "etc" / "master.cf").write_text("\n".join(master) + "\n")
        started = subprocess.run(["postfix", "-c", str(self.dir / "etc"), "start"], capture_output=True, text=True)
        if started.returncode != 0:
            log = (self.dir / "maillog").read_text() if (self.dir / "maillog").exists() else ""
            raise RuntimeError(f"postfix did not start: {started.stderr}{log[-2000:]}")
        wait_listening(self.port)
        self.ports = [self.port]

    def store_pids(self):
        return []

    def pids(self):
        try:
            master = int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
        return [master] + [int(p) for p in out.split()]

    def close(self):
        subprocess.run(["postfix", "-c", str(self.dir / "etc"), "stop"], capture_output=True)
        time.sleep(0.5)


class Smarthost:
    def __init__(self, binary, workdir, sink_port, connections, url=None, name="smarthost"):
        self.dir = workdir / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.ports = [self.port]
        config = self.dir / "smarthost.toml"
        spool_url = f'url = "{url}"' if url else ""
        self.metrics_ports = [free_port()]
        config.write_text(SMARTHOST_CONFIG.format(port=self.port, dir=self.dir, sink=sink_port,
                                                  connections=connections, spool_url=spool_url,
                                                  dns=free_port(), metrics=self.metrics_ports[0]))
        self.process = subprocess.Popen(
            [binary, "--config", str(config), "serve"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "w"), env={"RUST_LOG": "warn", **os.environ})
        wait_listening(self.port)

    def pids(self):
        return [self.process.pid]

    def store_pids(self):
        return []

    def close(self):
        stop(self.process)


PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


class OpenSMTPD:
    """OpenSMTPD from its Debian package, in a private mount namespace (peers.py)."""

    def __init__(self, workdir, sink_port):
        self.port = free_port()
        self.ports = [self.port]
        self.server = peers.Served("opensmtpd", peers.opensmtpd(workdir, self.port, sink_port), workdir)
        wait_listening(self.port)

    def pids(self):
        return self.server.pids()

    def store_pids(self):
        return []

    def close(self):
        self.server.close()


class Postgres:
    """A private PostgreSQL server in the work directory: initdb as the postgres user (it
    refuses root), listening on a Unix socket only, stopped by the PID in postmaster.pid."""

    def __init__(self, workdir):
        if not PG_BIN:
            raise RuntimeError("no PostgreSQL server (apt-get install postgresql)")
        self.bin = PG_BIN[-1].parent
        self.dir = workdir / "postgres"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self._as_postgres([self.bin / "initdb", "--no-sync", "--auth=trust", "--username=postgres",
                           "--encoding=UTF8", "-D", self.dir / "data"])
        options = f"-c listen_addresses='' -k {self.dir} -p {self.port} -c max_connections=100"
        self._as_postgres([self.bin / "pg_ctl", "start", "-w", "-t", "30", "-D", self.dir / "data",
                           "-l", self.dir / "server.log", "-o", options])
        self.url = f"postgresql://postgres@{str(self.dir).replace('/', '%2F')}:{self.port}/smarthost"

    def _as_postgres(self, command):
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + [str(c) for c in command], check=True, capture_output=True, timeout=60)

    def fresh_database(self):
        subprocess.run([self.bin / "psql", "-X", "-q", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres",
                        "-d", "postgres", "-c", "DROP DATABASE IF EXISTS smarthost WITH (FORCE)",
                        "-c", "CREATE DATABASE smarthost"], check=True, capture_output=True, timeout=60)

    def pids(self):
        try:
            master = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
        return [master] + [int(p) for p in out.split()]

    def close(self):
        for pid in self.pids()[:1]:
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.05)


class SmarthostFleet:
    """`nodes` smarthost daemons sharing one PostgreSQL spool (a fresh database each run)."""

    def __init__(self, binary, workdir, sink_port, connections, pg, nodes):
        pg.fresh_database()
        self.pg = pg
        self.nodes = []
        for i in range(nodes):
            self.nodes.append(Smarthost(binary, workdir, sink_port, connections, url=pg.url, name=f"node{i}"))
        self.ports = [node.port for node in self.nodes]
        self.metrics_ports = [port for node in self.nodes for port in node.metrics_ports]

    def pids(self):
        return [pid for node in self.nodes for pid in node.pids()]

    def store_pids(self):
        return self.pg.pids()

    def close(self):
        for node in self.nodes:
            node.close()


def proc_stat(pids):
    """(CPU seconds, RSS bytes) summed over processes still alive."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return cpu, rss


def median_of(values):
    """The median of the values that were measured (None: not for this target)."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


def fsync_floor(workdir, runs=200):
    """The disk's own latency for what a commit needs at least: a 4 KiB write and fdatasync
    of a file beside the spools (ms, median)."""
    path = workdir / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(runs):
            started = time.perf_counter()
            os.pwrite(fd, b"x" * 4096, 0)
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def context_switches(pids):
    """Voluntary plus involuntary context switches, over every thread of `pids`."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
            except (OSError, ValueError):
                pass
    return total


COMMIT_SERIES = ("smarthost_spool_commit_seconds_sum", "smarthost_spool_commit_seconds_count",
                 "smarthost_spool_commit_messages_sum", "smarthost_acceptance_seconds_sum",
                 "smarthost_acceptance_seconds_count")


def commit_figures(ports):
    """The spool-commit and acceptance series of smarthost's /metrics, summed over nodes."""
    totals = dict.fromkeys(COMMIT_SERIES, 0.0)
    for port in ports:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
                text = b""
                while chunk := client.recv(65536):
                    text += chunk
        except OSError:
            continue
        for line in text.decode(errors="replace").splitlines():
            name, _, value = line.partition(" ")
            if name in totals:
                totals[name] += float(value)
    return totals


def run_once(target, relay, sink, sessions, messages, size, limit):
    """smtp-source into the relay's port (split between a fleet's nodes); returns the measured
    figures."""
    ports = relay.ports if relay else [sink.port]
    store_of = relay.store_pids if relay else list
    before = sink.count()
    cpu_before, _ = proc_stat(relay.pids()) if relay else (0.0, 0)
    store_pids = store_of()
    store_cpu_before, _ = proc_stat(store_pids)
    switches_before = context_switches(relay.pids()) if relay else 0
    metrics_ports = getattr(relay, "metrics_ports", [])
    commits_before = commit_figures(metrics_ports)
    peak_rss = 0
    start = time.monotonic()
    sources = [subprocess.Popen(
        ["smtp-source", "-s", str(max(1, sessions // len(ports))), "-m", str(messages // len(ports)),
         "-l", str(size), "-d", "-f", "bench@bench.test", "-t", "sink@bench.test", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for port in ports]
    messages = messages // len(ports) * len(ports)
    accepted_at = None
    deadline = start + limit
    while time.monotonic() < deadline:
        if accepted_at is None and all(source.poll() is not None for source in sources):
            accepted_at = time.monotonic()
        if relay:
            peak_rss = max(peak_rss, proc_stat(relay.pids())[1])
        if accepted_at is not None and sink.count() - before >= messages:
            break
        time.sleep(0.02)
    done_at = time.monotonic()
    delivered = sink.count() - before
    if accepted_at is None:
        for source in sources:
            stop(source)
        accepted_at = done_at
    cpu_after, _ = proc_stat(relay.pids()) if relay else (0.0, 0)
    # The store's share: PostgreSQL's backends come and go with the connections, so this
    # counts the ones still alive (the nodes keep theirs open).
    store_cpu_after, _ = proc_stat(store_of())
    switches = context_switches(relay.pids()) - switches_before if relay else 0
    commits_after = commit_figures(metrics_ports)
    delta = {k: commits_after[k] - commits_before[k] for k in COMMIT_SERIES}
    commits = delta["smarthost_spool_commit_seconds_count"]
    accepted = delta["smarthost_acceptance_seconds_count"]
    return {
        "context_switches_per_message": switches / max(messages, 1),
        "messages_per_commit": delta["smarthost_spool_commit_messages_sum"] / commits if commits else None,
        "commit_ms": delta["smarthost_spool_commit_seconds_sum"] / commits * 1000 if commits else None,
        "acceptance_ms": delta["smarthost_acceptance_seconds_sum"] / accepted * 1000 if accepted else None,
        "target": target,
        "accept_rate": messages / max(accepted_at - start, 1e-6),
        "e2e_rate": delivered / max(done_at - start, 1e-6),
        "delivered": delivered,
        "complete": delivered >= messages,
        "peak_rss_mib": peak_rss / 2**20,
        "cpu_s_per_1000": (cpu_after - cpu_before) / max(messages, 1) * 1000 if relay else 0.0,
        "store_cpu_s_per_1000": max(store_cpu_after - store_cpu_before, 0.0) / max(messages, 1) * 1000,
    }


def latency(port, count):
    """Acceptance latency (end of data to 250) from one smtplib client, in ms: p50, p99."""
    import smtplib
    samples = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("latency.bench.test")
        body = b"Subject: latency\r\n\r\n" + b"x" * 1000 + b"\r\n"
        for _ in range(count):
            client.mail("bench@bench.test")
            client.rcpt("sink@bench.test")
            client.putcmd("data")
            client.getreply()
            client.send(body + b".\r\n")
            started = time.perf_counter()
            code, _ = client.getreply()
            samples.append((time.perf_counter() - started) * 1000)
            assert code == 250, code
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def idle_memory(relay, sessions):
    """RSS of an idle relay, and with `sessions` idle SMTP sessions open (each sends EHLO once
    its banner came; a relay that serves fewer sessions at once, as Postfix's process limit
    of 100 does, keeps the rest waiting unanswered, which is what it costs)."""
    import selectors
    time.sleep(1)
    idle = proc_stat(relay.pids())[1] / 2**20
    clients = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(sessions):
            try:
                client = socket.create_connection(("127.0.0.1", relay.port), timeout=2)
            except OSError:
                break  # its listen queue is full: it holds no more sessions
            client.setblocking(False)
            selector.register(client, selectors.EVENT_READ)
            clients.append(client)
        deadline = time.monotonic() + 10
        waiting = len(clients)
        while waiting and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                try:
                    key.fileobj.recv(512)
                    key.fileobj.sendall(b"EHLO idle.bench.test\r\n")
                except OSError:
                    pass
                selector.unregister(key.fileobj)
                waiting -= 1
        time.sleep(1)
        busy = proc_stat(relay.pids())[1] / 2**20
        served = len(clients) - waiting
    finally:
        selector.close()
        for client in clients:
            client.close()
    return idle, busy, served


def burst(binary, workdir, messages):
    """smarthost only: `messages` arrive while the upstream is down, so the queue grows that
    deep; then the upstream comes back, the operator runs `queue retry --all` (Postfix's
    `postqueue -f`), and the queue drains. Returns the acceptance rate, the queue depth when
    acceptance ended, the peak RSS while the queue was deep and while it drained, the drain
    rate, and whether every message arrived."""
    sink_port = free_port()
    relay = Smarthost(binary, workdir, sink_port, CONNECTIONS)
    config = str(relay.dir / "smarthost.toml")
    sink = None
    try:
        start = time.monotonic()
        source = subprocess.Popen(
            ["smtp-source", "-s", "20", "-m", str(messages), "-l", "1024", "-d",
             "-f", "bench@bench.test", "-t", "sink@bench.test", f"127.0.0.1:{relay.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak_deep = 0
        deadline = start + max(600, messages / 50)
        while source.poll() is None and time.monotonic() < deadline:
            peak_deep = max(peak_deep, proc_stat(relay.pids())[1])
            time.sleep(0.1)
        if source.poll() is None:
            stop(source)
        accepted_at = time.monotonic()
        stats = json.loads(subprocess.run([binary, "--config", config, "queue", "stats", "--json"],
                                          capture_output=True, text=True, check=True).stdout)
        depth = stats["stats"]["pending_messages"]
        peak_deep = max(peak_deep, proc_stat(relay.pids())[1])

        sink = Sink(workdir, sink_port)
        drain_start = time.monotonic()
        subprocess.run([binary, "--config", config, "queue", "retry", "--all"], capture_output=True, check=True)
        peak_drain = 0
        deadline = drain_start + max(600, messages / 50)
        while time.monotonic() < deadline and sink.count() < messages:
            peak_drain = max(peak_drain, proc_stat(relay.pids())[1])
            time.sleep(0.1)
        drained_at = time.monotonic()
        delivered = sink.count()
        return {
            "messages": messages,
            "accept_rate": messages / max(accepted_at - start, 1e-6),
            "queue_depth_at_acceptance": depth,
            "peak_rss_deep_mib": peak_deep / 2**20,
            "peak_rss_draining_mib": peak_drain / 2**20,
            "drain_rate": delivered / max(drained_at - drain_start, 1e-6),
            "all_delivered": delivered >= messages,
        }
    finally:
        relay.close()
        if sink:
            sink.close()


def handoff(binary, workdir, sink, runs):
    """`sendmail` as cron calls it, for every peer: how long cron waits (median, p99 of
    `runs`). Postfix and smarthost run their daemons meanwhile (Postfix's sendmail hands to
    postdrop/pickup; smarthost as an unprivileged user hands to its daemon's socket), and
    deliver to the sink; nullmailer and dma only queue; msmtp talks to the sink itself."""
    timings = {}
    postfix = Postfix(workdir, sink.port)
    try:
        timings["Postfix"] = peers.time_handoff("postfix", peers.postfix(postfix.dir / "etc"), workdir, runs)
    finally:
        postfix.close()
    relay = Smarthost(binary, workdir, sink.port, CONNECTIONS)
    try:
        config = relay.dir / "smarthost.toml"
        timings["smarthost (root: its spool)"] = peers.time_handoff(
            "smarthost-root", peers.smarthost(binary, config), workdir, runs)
        timings["smarthost (nobody: to the daemon)"] = peers.time_handoff(
            "smarthost-nobody", peers.smarthost(binary, config, user="nobody"), workdir, runs)
    finally:
        relay.close()
    for name, spec in (("nullmailer", peers.nullmailer(workdir, sink.port)),
                       ("dma", peers.dma(workdir, sink.port)),
                       ("msmtp (until the upstream answers)", peers.msmtp(workdir, sink.port))):
        timings[name] = peers.time_handoff(name.split()[0], spec, workdir, runs)
    for name, t in timings.items():
        print(f"sendmail hand-off, {name}: median {t['median_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms", flush=True)
    return timings


def backlog_drain(binary, workdir, messages):
    """`messages` submitted through each peer's own sendmail while the upstream is down, then
    the upstream started and each peer's own flush (`postqueue -f`, nullmailer's trigger,
    `dma -q`, `smarthost queue retry --all`): seconds until the upstream has every message,
    the rate, and the peer's peak RSS meanwhile (all its processes)."""
    results = {}
    for name in ("Postfix", "nullmailer", "dma", "smarthost"):
        port = free_port()
        relay = backlog = sink = None
        try:
            if name == "Postfix":
                relay = Postfix(workdir, port)
                spec = dict(peers.postfix(relay.dir / "etc"),
                            flush=["postqueue", "-c", str(relay.dir / "etc"), "-f"])
            elif name == "smarthost":
                relay = Smarthost(binary, workdir, port, CONNECTIONS)
                config = relay.dir / "smarthost.toml"
                spec = dict(peers.smarthost(binary, config),
                            flush=[binary, "--config", str(config), "queue", "retry", "--all"])
            elif name == "nullmailer":
                spec = peers.nullmailer(workdir, port)
            else:
                spec = peers.dma(workdir, port, defer=True)
            backlog = peers.Backlog(name.lower(), spec, workdir, messages)
            sink = Sink(workdir, port)
            started = time.monotonic()
            backlog.flush()
            peak = 0
            deadline = started + max(600, messages / 5)
            # A flush that leaves mail behind (dma -q forks one delivery per message at once;
            # those refused a connection wait for its next queue run) is not waited out: once
            # nothing has arrived for STALLED_AFTER seconds, what arrived is the result.
            delivered, last_arrival = 0, started
            while delivered < messages and time.monotonic() < deadline \
                    and time.monotonic() - last_arrival < STALLED_AFTER:
                pids = backlog.pids() + (relay.pids() if relay else [])
                peak = max(peak, proc_stat(pids)[1])
                time.sleep(0.05)
                if (count := sink.count()) > delivered:
                    delivered, last_arrival = count, time.monotonic()
            elapsed = max(last_arrival - started, 1e-3)
            results[name] = {"messages": messages, "delivered": delivered, "seconds": elapsed,
                             "rate": delivered / elapsed, "peak_rss_mib": peak / 2**20}
            left = f", {messages - delivered} left in its queue" if delivered < messages else ""
            print(f"backlog of {messages}, {name}: {delivered} delivered in {elapsed:.1f} s "
                  f"({delivered / elapsed:.0f}/s){left}, peak RSS {peak / 2**20:.1f} MiB", flush=True)
        finally:
            for thing in (backlog, sink, relay):
                if thing:
                    thing.close()
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smarthost", required=True)
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--no-postgres", action="store_true",
                        help="skip smarthost on PostgreSQL (say, to compare with a build from before it)")
    parser.add_argument("--only", choices=["handoff", "backlog", "idle"],
                        help="only this scenario (every peer): the sendmail hand-off, or the backlog drain")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="smarthost-bench-"))
    # Postfix's daemons run as the postfix user and must reach their queue below it.
    workdir.chmod(0o755)
    rounds = 1 if args.quick else 3
    scale = 5 if args.quick else 1
    # (name, sessions, messages, size, whether smarthost on PostgreSQL runs it too)
    scenarios = [
        ("1 session x 1 KiB", 1, 2000 // scale, 1024, True),
        ("20 sessions x 1 KiB", 20, 20000 // scale, 1024, True),
        ("100 sessions x 1 KiB", 100, 20000 // scale, 1024, False),
        ("20 sessions x 100 KiB", 20, 2000 // scale, 100 * 1024, False),
    ]
    results = {"machine": os.uname().nodename, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
               "scenarios": {}}
    results["fsync_floor_ms"] = fsync_floor(workdir)
    sink = Sink(workdir)
    pg = None if args.no_postgres or args.only else Postgres(workdir)
    try:
        if args.only in (None, "handoff"):
            results["handoff"] = handoff(args.smarthost, workdir, sink, 200 // scale)
        if args.only in (None, "backlog"):
            results["backlog"] = backlog_drain(args.smarthost, workdir, 10_000 // scale)
        if args.only:
            scenarios = []
        for name, sessions, messages, size, on_postgres in scenarios:
            targets = ["ceiling", "postfix", "opensmtpd", "smarthost"] + (["smarthost-pg", "smarthost-pg2"] if on_postgres and pg else [])
            runs = {target: [] for target in targets}
            limit = max(120, messages / 50)
            for _ in range(rounds):
                for target in targets:
                    relay = None
                    try:
                        if target == "postfix":
                            relay = Postfix(workdir, sink.port)
                        elif target == "opensmtpd":
                            relay = OpenSMTPD(workdir, sink.port)
                        elif target == "smarthost":
                            relay = Smarthost(args.smarthost, workdir, sink.port, CONNECTIONS)
                        elif target == "smarthost-pg":
                            relay = SmarthostFleet(args.smarthost, workdir, sink.port, CONNECTIONS, pg, 1)
                        elif target == "smarthost-pg2":
                            relay = SmarthostFleet(args.smarthost, workdir, sink.port, CONNECTIONS, pg, 2)
                        runs[target].append(run_once(target, relay, sink, sessions, messages, size, limit))
                    finally:
                        if relay:
                            relay.close()
            summary = {}
            for target, samples in runs.items():
                summary[target] = {key: median_of(s[key] for s in samples)
                                   for key in ("accept_rate", "e2e_rate", "peak_rss_mib", "cpu_s_per_1000",
                                               "store_cpu_s_per_1000", "context_switches_per_message",
                                               "messages_per_commit", "commit_ms", "acceptance_ms")}
                summary[target]["complete"] = all(s["complete"] for s in samples)
            results["scenarios"][name] = summary
            print(f"{name}: " + ", ".join(f"{t} {v['e2e_rate']:.0f}/s" for t, v in summary.items()), flush=True)
        # Acceptance latency, each relay on its own.
        for target in ("postfix", "smarthost") if scenarios else ():
            relay = Postfix(workdir, sink.port) if target == "postfix" else Smarthost(args.smarthost, workdir, sink.port, CONNECTIONS)
            try:
                results.setdefault("latency_ms", {})[target] = latency(relay.port, 200 // (scale if args.quick else 1))
            finally:
                relay.close()
        if args.only in (None, "idle"):
            for name, make in (("Postfix", lambda: Postfix(workdir, sink.port)),
                               ("OpenSMTPD", lambda: OpenSMTPD(workdir, sink.port)),
                               ("smarthost", lambda: Smarthost(args.smarthost, workdir, sink.port, CONNECTIONS))):
                relay = make()
                try:
                    results.setdefault("idle", {})[name] = idle_memory(relay, 500)
                finally:
                    relay.close()
        if scenarios:
            results["burst"] = burst(args.smarthost, workdir, 100_000 // scale)
    finally:
        sink.close()
        if pg:
            pg.close()
        shutil.rmtree(workdir, ignore_errors=True)
    table = render(results)
    print(table)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))


def render(results):
    lines = [f"Machine {results['machine']} ({results['cores']} cores), {results['date']}."]
    if results["scenarios"]:
        lines += ["", "| scenario | ceiling e2e/s | Postfix accept/s | Postfix e2e/s | smarthost accept/s | smarthost e2e/s | smarthost/Postfix | smarthost/ceiling | RSS MiB (Postfix, smarthost) | CPU s/1000 (Postfix, smarthost) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in results["scenarios"].items():
        c, p, h = s["ceiling"], s["postfix"], s["smarthost"]
        lines.append(
            f"| {name} | {c['e2e_rate']:.0f} | {p['accept_rate']:.0f} | {p['e2e_rate']:.0f} | {h['accept_rate']:.0f} | "
            f"{h['e2e_rate']:.0f} | {h['e2e_rate'] / max(p['e2e_rate'], 1e-9):.2f} | {h['e2e_rate'] / max(c['e2e_rate'], 1e-9):.2f} | "
            f"{p['peak_rss_mib']:.0f}, {h['peak_rss_mib']:.0f} | {p['cpu_s_per_1000']:.2f}, {h['cpu_s_per_1000']:.2f} |")
    timed = [(name, s["smarthost"]) for name, s in results["scenarios"].items()
             if s.get("smarthost", {}).get("commit_ms") is not None]
    if timed:
        lines += ["", f"Where smarthost's time goes (SQLite; the disk's own 4 KiB write + fdatasync: "
                  f"{results['fsync_floor_ms']:.2f} ms median):", "",
                  "| scenario | acceptance ms (end of DATA to 250, mean) | commit ms (mean) | waiting for the writer ms | messages per commit | context switches per message |",
                  "|---|---|---|---|---|---|"]
        for name, h in timed:
            lines.append(f"| {name} | {h['acceptance_ms']:.2f} | {h['commit_ms']:.2f} | "
                         f"{h['acceptance_ms'] - h['commit_ms']:.2f} | {h['messages_per_commit']:.1f} | "
                         f"{h['context_switches_per_message']:.1f} |")
    others = [(name, s) for name, s in results["scenarios"].items() if "opensmtpd" in s]
    if others:
        lines += ["", "The same runs against OpenSMTPD (20 connections to the relay, no connection pacing: `peers.opensmtpd`):", "",
                  "| scenario | OpenSMTPD accept/s | OpenSMTPD e2e/s | smarthost/OpenSMTPD | RSS MiB | CPU s/1000 |",
                  "|---|---|---|---|---|---|"]
        for name, s in others:
            o, h = s["opensmtpd"], s["smarthost"]
            lines.append(f"| {name} | {o['accept_rate']:.0f} | {o['e2e_rate']:.0f} | "
                         f"{h['e2e_rate'] / max(o['e2e_rate'], 1e-9):.2f} | {o['peak_rss_mib']:.0f} | "
                         f"{o['cpu_s_per_1000']:.2f} |")
    fleet = [(name, s) for name, s in results["scenarios"].items() if "smarthost-pg" in s]
    if fleet:
        lines += ["", "smarthost on PostgreSQL (a private server on this machine, fsync and synchronous_commit on):", "",
                  "| scenario | SQLite e2e/s | PostgreSQL, 1 node e2e/s | PostgreSQL, 2 nodes e2e/s | 1 node/Postfix | 2 nodes/Postfix | relay CPU s/1000 (1 node, 2 nodes) | PostgreSQL CPU s/1000 (1 node, 2 nodes) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, s in fleet:
            p, one, two = s["postfix"], s["smarthost-pg"], s["smarthost-pg2"]
            lines.append(
                f"| {name} | {s['smarthost']['e2e_rate']:.0f} | {one['e2e_rate']:.0f} | {two['e2e_rate']:.0f} | "
                f"{one['e2e_rate'] / max(p['e2e_rate'], 1e-9):.2f} | {two['e2e_rate'] / max(p['e2e_rate'], 1e-9):.2f} | "
                f"{one['cpu_s_per_1000']:.2f}, {two['cpu_s_per_1000']:.2f} | "
                f"{one['store_cpu_s_per_1000']:.2f}, {two['store_cpu_s_per_1000']:.2f} |")
    if "latency_ms" in results:
        lat = results["latency_ms"]
        lines.append("")
        lines.append(f"Acceptance latency, one client (p50 / p99 ms): Postfix {lat['postfix'][0]:.1f} / {lat['postfix'][1]:.1f}, "
                     f"smarthost {lat['smarthost'][0]:.1f} / {lat['smarthost'][1]:.1f}.")
    if "handoff" in results:
        lines += ["", "`sendmail -FCronDaemon -i -B8BITMIME -oem` as cron runs it, how long cron waits "
                  f"({next(iter(results['handoff'].values()))['runs']} runs each):", "",
                  "| peer | median ms | p99 ms |", "|---|---|---|"]
        for name, t in results["handoff"].items():
            lines.append(f"| {name} | {t['median_ms']:.2f} | {t['p99_ms']:.2f} |")
    if "backlog" in results:
        lines += ["", "Backlog drain: submitted through each one's sendmail with the upstream down, then "
                  "the upstream started and each one's flush; seconds until the last message arrived (a flush that then "
                  f"delivered nothing for {STALLED_AFTER:.0f} s counts as done, and what it left stays queued):", "",
                  "| peer | messages | delivered | seconds | messages/s | peak RSS MiB |", "|---|---|---|---|---|---|"]
        for name, b in results["backlog"].items():
            lines.append(f"| {name} | {b['messages']} | {b['delivered']} | {b['seconds']:.1f} | {b['rate']:.0f} | "
                         f"{b['peak_rss_mib']:.1f} |")
    if "idle" in results:
        lines += ["", "RSS of the listening relays (all their processes), idle and with 500 idle sessions:", "",
                  "| relay | idle MiB | 500 sessions MiB | sessions given a banner |", "|---|---|---|---|"]
        for name, (idle, busy, served) in results["idle"].items():
            lines.append(f"| {name} | {idle:.1f} | {busy:.1f} | {served} |")
    if "burst" in results:
        b = results["burst"]
        steady = results["scenarios"].get("20 sessions x 1 KiB", {}).get("smarthost", {}).get("e2e_rate")
        versus = f" ({b['drain_rate'] / steady:.2f} of the 20-session steady rate)" if steady else ""
        lines.append(f"Burst of {b['messages']} x 1 KiB into smarthost with the upstream down: accepted at "
                     f"{b['accept_rate']:.0f}/s, queue {b['queue_depth_at_acceptance']} deep, peak RSS "
                     f"{b['peak_rss_deep_mib']:.0f} MiB; upstream back and `queue retry --all`: drained at "
                     f"{b['drain_rate']:.0f}/s{versus}, peak RSS {b['peak_rss_draining_mib']:.0f} MiB; "
                     f"every message delivered: {b['all_delivered']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
