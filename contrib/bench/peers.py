"""The small relays an operator weighs against smarthost for cron mail — nullmailer, dma,
msmtp — each from Debian's package, never installed: `apt-get download` + `dpkg -x` into the
benchmark's work directory, and run by in_namespace.py in a private mount namespace where the
package's files and a private configuration and queue sit over the system's paths (overlays;
see in_namespace.py). msmtp is a client without a queue: its hand-off lasts until the upstream
has answered.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# What cron passes (Debian cron; cronie adds -t), to a recipient every peer relays.
CRON_FLAGS = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem"]
RECIPIENT = "sink@bench.test"
# Inside the namespaces, DNS goes to loopback (nothing answers there), never to the machine's
# resolver: the peers need none to relay to 127.0.0.1.
NO_DNS = {"/etc/resolv.conf": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"}


def extract(package, workdir):
    """The package's files under workdir/pkg/<package> (downloaded once per run)."""
    debs = workdir / "debs"
    debs.mkdir(exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        subprocess.run(["apt-get", "download", "-q", package], cwd=debs, check=True, capture_output=True)
    root = workdir / "pkg" / package
    if not root.exists():
        root.mkdir(parents=True)
        deb = next(debs.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def nullmailer(workdir, sink_port):
    root = extract("nullmailer", workdir)
    spool = "/var/spool/nullmailer"
    return {
        "overlays": [["/etc", [str(root / "etc")]], ["/var/spool", []],
                     ["/usr/sbin", [str(root / "usr/sbin")]], ["/usr/bin", [str(root / "usr/bin")]],
                     ["/usr/lib", [str(root / "usr/lib")]]],
        "files": {**NO_DNS, "/etc/nullmailer/remotes": f"127.0.0.1 smtp --port={sink_port}\n",
                  "/etc/nullmailer/me": "nullmailer.bench.test\n",
                  "/etc/nullmailer/defaultdomain": "bench.test\n"},
        "dirs": [[spool, "mail", "root", "0755"], [f"{spool}/queue", "mail", "root", "0750"],
                 [f"{spool}/tmp", "mail", "root", "0750"], [f"{spool}/failed", "mail", "root", "0750"]],
        "fifos": [[f"{spool}/trigger", "mail", "0600"]],
        "command": ["/usr/sbin/sendmail"] + CRON_FLAGS + [RECIPIENT],
        # The queue runner (as the init script runs it, as mail), woken by the trigger FIFO.
        "daemon": ["setpriv", "--reuid=mail", "--regid=mail", "--clear-groups", "/usr/sbin/nullmailer-send"],
        "trigger": f"{spool}/trigger",
    }


def dma(workdir, sink_port, defer=False):
    """With `defer`, sendmail only queues (DEFER): the backlog is flushed by `dma -q`."""
    root = extract("dma", workdir)
    conf = f"SMARTHOST 127.0.0.1\nPORT {sink_port}\nMAILNAME dma.bench.test\n" + ("DEFER\n" if defer else "")
    return {
        "overlays": [["/etc", [str(root / "etc")]], ["/var/spool", []],
                     ["/usr/sbin", [str(root / "usr/sbin")]], ["/usr/lib", [str(root / "usr/lib")]]],
        "files": {**NO_DNS, "/etc/dma/dma.conf": conf},
        "dirs": [["/var/spool/dma", "root", "mail", "2775"]],
        "command": ["/usr/sbin/sendmail"] + CRON_FLAGS + [RECIPIENT],
        "flush": ["/usr/sbin/dma", "-q"],
    }


def opensmtpd(workdir, port, sink_port):
    """OpenSMTPD relaying from loopback to the sink. Its privilege-separated processes run as
    the users Debian's package creates (opensmtpd, opensmtpq): here they exist only in the
    namespace's /etc.

    Two of its defaults are changed, as an operator relaying bulk mail would (the settings are
    undocumented in smtpd.conf(5) but read by its parser, limit.c): an SMTP session may carry
    any number of messages (by default the 101st gets "452 4.5.3 Too many messages sent",
    which stops smtp-source), and its mta may open 20 connections to the relay at once like
    Postfix's and smarthost's, without its connection pacing (by default one new connection
    to a relay per 2 s and per route per 5 s, at most 5 per route, and 50 tasks queued: it
    delivered 1-18 messages/s here that way)."""
    root = extract("opensmtpd", workdir)
    users = ("opensmtpd:x:60101:60101::/var/lib/opensmtpd/empty:/usr/sbin/nologin\n"
             "opensmtpq:x:60102:60102::/var/lib/opensmtpd/empty:/usr/sbin/nologin\n")
    return {
        "overlays": [["/etc", [str(root / "etc")]], ["/var/spool", []], ["/var/lib", []], ["/run", []],
                     ["/usr/sbin", [str(root / "usr/sbin")]], ["/usr/libexec", [str(root / "usr/libexec")]]],
        "append": {"/etc/passwd": users, "/etc/group": "opensmtpd:x:60101:\nopensmtpq:x:60102:\n"},
        "dirs": [["/var/lib/opensmtpd/empty", "root", "root", "0755"]],
        "files": {**NO_DNS, "/etc/smtpd.conf": f'listen on 127.0.0.1 port {port}\n'
                                     f'action "relay" relay host "smtp://127.0.0.1:{sink_port}"\n'
                                     'match from any for any action "relay"\n'
                                     'smtp limit max-mails 1000000\n'
                                     'mta limit max-conn-per-route 20 max-conn-per-host 20 '
                                     'conn-delay-route 0 conn-delay-relay 0 '
                                     'task-hiwat 2000 task-lowat 1000 task-release 100\n'},
        "daemon": ["/usr/sbin/smtpd", "-F", "-f", "/etc/smtpd.conf"],
        "command": ["/usr/sbin/smtpctl", "show", "status"],
    }


def msmtp(workdir, sink_port):
    config = workdir / "msmtprc"
    config.write_text(f"account default\nhost 127.0.0.1\nport {sink_port}\nfrom root@msmtp.bench.test\n"
                      "auth off\ntls off\n")
    config.chmod(0o600)
    return {"command": ["msmtp", "-C", str(config)] + CRON_FLAGS + [RECIPIENT]}


def postfix(config_dir):
    return {"command": ["/usr/sbin/sendmail", "-C", str(config_dir)] + CRON_FLAGS + [RECIPIENT]}


def smarthost(binary, config, user=None):
    """The sendmail the package installs: the lean `smarthost-sendmail` built beside `binary`."""
    sendmail = str(Path(binary).with_name("smarthost-sendmail"))
    spec = {"command": [sendmail, "--config", str(config)] + CRON_FLAGS + [RECIPIENT]}
    if user:
        spec["user"] = user
    return spec


def _spec_file(name, spec, workdir, runs):
    spec = dict(spec, runs=runs, work=str(workdir / "ns" / name))
    Path(spec["work"]).mkdir(parents=True, exist_ok=True)
    spec_file = workdir / "ns" / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    return spec_file


def _in_namespace(mode, spec_file):
    return ["unshare", "--mount", "--propagation", "private", sys.executable,
            str(HERE / "in_namespace.py"), mode, str(spec_file)]


def time_handoff(name, spec, workdir, runs):
    """in_namespace.py handoff: {"median_ms", "p99_ms", "runs"}."""
    result = subprocess.run(_in_namespace("handoff", _spec_file(name, spec, workdir, runs)),
                            capture_output=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{name}: {result.stderr.decode(errors='replace')}")
    return json.loads(result.stdout)


class _Namespaced:
    """in_namespace.py in MODE, talked to over its standard input and output; `close()` tells
    it to stop (it stops its daemon) and waits for it."""

    def __init__(self, mode, name, spec, workdir, runs):
        self.process = subprocess.Popen(_in_namespace(mode, _spec_file(name, spec, workdir, runs)),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        if not self.process.stdout.readline():
            raise RuntimeError(f"{name}: {self.process.stderr.read()}")

    def pids(self):
        """Every process below the namespace's runner (the daemon, the flush command), not
        the runner itself (`unshare` execs it: it is our Python, not the peer)."""
        return descendants(self.process.pid)[1:]

    def close(self):
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)


class Served(_Namespaced):
    """in_namespace.py serve: the spec's daemon running until `close()`."""

    def __init__(self, name, spec, workdir):
        super().__init__("serve", name, spec, workdir, 0)


class Backlog(_Namespaced):
    """in_namespace.py backlog: `messages` submitted while the upstream is down (returns once
    they are), then, on `flush()`, the peer's own flush."""

    def __init__(self, name, spec, workdir, messages):
        super().__init__("backlog", name, spec, workdir, messages)

    def flush(self):
        self.process.stdin.write("flush\n")
        self.process.stdin.flush()


def descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found
