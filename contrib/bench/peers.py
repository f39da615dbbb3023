"""The small relays an operator weighs against smarthost for cron mail — nullmailer, dma,
msmtp — each from Debian's package, never installed: `apt-get download` + `dpkg -x` into the
benchmark's work directory, and run by handoff.py in a private mount namespace where the
package's files and a private configuration and queue sit over the system's paths (overlays;
see handoff.py). msmtp is a client without a queue: its hand-off lasts until the upstream has
answered.
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
        "files": {"/etc/nullmailer/remotes": f"127.0.0.1 smtp --port={sink_port}\n",
                  "/etc/nullmailer/me": "nullmailer.bench.test\n",
                  "/etc/nullmailer/defaultdomain": "bench.test\n"},
        "dirs": [[spool, "mail", "root", "0755"], [f"{spool}/queue", "mail", "root", "0750"],
                 [f"{spool}/tmp", "mail", "root", "0750"], [f"{spool}/failed", "mail", "root", "0750"]],
        "fifos": [[f"{spool}/trigger", "mail", "0600"]],
        "command": ["/usr/sbin/sendmail"] + CRON_FLAGS + [RECIPIENT],
    }


def dma(workdir, sink_port):
    root = extract("dma", workdir)
    return {
        "overlays": [["/etc", [str(root / "etc")]], ["/var/spool", []],
                     ["/usr/sbin", [str(root / "usr/sbin")]], ["/usr/lib", [str(root / "usr/lib")]]],
        "files": {"/etc/dma/dma.conf": f"SMARTHOST 127.0.0.1\nPORT {sink_port}\nMAILNAME dma.bench.test\n"},
        "dirs": [["/var/spool/dma", "root", "mail", "2775"]],
        "command": ["/usr/sbin/sendmail"] + CRON_FLAGS + [RECIPIENT],
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
    spec = {"command": [binary, "--config", str(config), "sendmail"] + CRON_FLAGS + [RECIPIENT]}
    if user:
        spec["user"] = user
    return spec


def time_handoff(name, spec, workdir, runs):
    """handoff.py in its own mount namespace: {"median_ms", "p99_ms", "runs"}."""
    spec = dict(spec, runs=runs, work=str(workdir / "ns" / name))
    Path(spec["work"]).mkdir(parents=True, exist_ok=True)
    spec_file = workdir / "ns" / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                             str(HERE / "handoff.py"), str(spec_file)],
                            capture_output=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{name}: {result.stderr.decode(errors='replace')}")
    return json.loads(result.stdout)
