#!/usr/bin/env python3
"""A private Postfix (Debian's postfix 3.7, written independently of smarthost) as a strict
upstream: STARTTLS with the test certificate, SASL AUTH (Cyrus sasldb, PLAIN/LOGIN, only under
TLS), SIZE 102400 and smtpd_recipient_limit = 50. It relays what it accepts to an smtp-sink
on loopback. Started from its own config directory; the system's Postfix is never touched.

usage: postfix_upstream.py start DIR --cert PEM --key KEY --listen PORT --sink PORT
                                 --user U --password P
       postfix_upstream.py stop DIR
"""
import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REALM = "postfix.test"

MAIN_CF = """compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {realm}
mydestination =
mynetworks = 127.0.0.1/32
relayhost = [127.0.0.1]:{sink}
smtp_tls_security_level = none
alias_maps =
alias_database =
local_recipient_maps =
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = {realm}
smtpd_sasl_security_options = noanonymous
cyrus_sasl_config_path = {dir}/etc/sasl
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
message_size_limit = 102400
smtpd_recipient_limit = 50
"""

SMTPD_CONF = """pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: {dir}/etc/sasl/sasldb2
"""


def start(args):
    directory = Path(args.dir).resolve()
    # Debian's Postfix reads smtpd.conf from the sasl directory beside main.cf.
    for sub in ("etc", "etc/sasl", "queue", "data"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(directory / "data", "postfix")
    # smtpd reads the TLS key as root at start; a private copy keeps the test CA's files as
    # they are.
    key = directory / "etc" / "server.key"
    shutil.copy(args.key, key)
    key.chmod(0o600)
    (directory / "etc" / "main.cf").write_text(MAIN_CF.format(
        dir=directory, realm=REALM, sink=args.sink, cert=args.cert, key=key))
    master = Path("/etc/postfix/master.cf").read_text().splitlines()
    master = [f"127.0.0.1:{args.listen} inet n - n - - smtpd" if line.startswith("smtp      inet")
              else line for line in master]
    (directory / "etc" / "master.cf").write_text("\n".join(master) + "\n")
    (directory / "etc" / "sasl" / "smtpd.conf").write_text(SMTPD_CONF.format(dir=directory))
    sasldb = directory / "etc" / "sasl" / "sasldb2"
    subprocess.run(["saslpasswd2", "-c", "-p", "-f", str(sasldb), "-u", REALM, args.user],
                   input=args.password.encode(), check=True)
    shutil.chown(sasldb, "postfix")
    sasldb.chmod(0o600)
    started = subprocess.run(["postfix", "-c", str(directory / "etc"), "start"],
                             capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        sys.exit(f"postfix did not start: {started.stderr}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", args.listen), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("postfix is not listening")


def stop(args):
    directory = Path(args.dir).resolve()
    subprocess.run(["postfix", "-c", str(directory / "etc"), "stop"],
                   capture_output=True, timeout=60)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("dir")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--listen", type=int)
    parser.add_argument("--sink", type=int)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    start(args) if args.command == "start" else stop(args)


if __name__ == "__main__":
    main()
