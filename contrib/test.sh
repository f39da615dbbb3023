#!/usr/bin/env bash
# Runs every test. First installs the real peers the tests talk to, when missing:
# swaks (Debian) for `sendmail -bs` and as a TLS/AUTH client (with libio-socket-ssl-perl);
# msmtp (Debian; the client, not msmtp-mta) as another TLS/AUTH client; nmap (Debian) for its
# smtp-open-relay probe; testssl.sh (Debian) to rate the TLS listeners; knot (Debian) as the
# DNS server for preflight; python3-spf (Debian: pyspf, with python3-dnspython) as the
# reference SPF evaluator preflight's verdicts are compared with; python3 for smtplib clients and sqlite3 locking; postfix and
# sasl2-bin (Debian) for a private Postfix upstream with SASL AUTH (started from its own
# config directory: the package is installed with "No configuration", so no system MTA is
# set up or started);
# aiosmtpd (PyPI) as the upstream relay, cryptography (PyPI) for its test CA,
# prometheus-client (PyPI) whose OpenMetrics parser reads our /metrics, and moto[server]
# (PyPI, with boto3) as the SESv2 API.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
perl -MIO::Socket::SSL -e 1 2>/dev/null || missing+=(libio-socket-ssl-perl)
command -v msmtp >/dev/null 2>&1 || missing+=(msmtp)
command -v nmap >/dev/null 2>&1 || missing+=(nmap)
command -v testssl >/dev/null 2>&1 || missing+=(testssl.sh)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v knotd >/dev/null 2>&1 || missing+=(knot)
command -v smtp-sink >/dev/null 2>&1 || missing+=(postfix)
command -v saslpasswd2 >/dev/null 2>&1 || missing+=(sasl2-bin)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# For the packaging tests: man(1) renders the pages, systemd-analyze judges the unit,
# promtool (Debian's prometheus package; its server is never started by the tests) checks
# the alert rules.
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# pyspf, the reference SPF evaluator, for Debian's own /usr/bin/python3.
/usr/bin/python3 -c "import spf, dns.resolver" 2>/dev/null || missing+=(python3-spf python3-dnspython)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

python_missing=()
python3 -c "import aiosmtpd" 2>/dev/null || python_missing+=(aiosmtpd)
python3 -c "import cryptography" 2>/dev/null || python_missing+=(cryptography)
python3 -c "import prometheus_client" 2>/dev/null || python_missing+=(prometheus-client)
{ python3 -c "import moto.server, boto3, flask_cors" 2>/dev/null && command -v moto_server >/dev/null 2>&1; } \
  || python_missing+=("moto[server]")
if [ "${#python_missing[@]}" -gt 0 ]; then
  python3 -m pip install --quiet --disable-pip-version-check "${python_missing[@]}"
fi

cargo test --locked "$@"

# The Debian package: built from the binary the tests used, checked by dpkg-deb and lintian,
# installed into a clean Debian 12 root (debootstrap) and used there (about 1.5 minutes).
bash contrib/package-test.sh

# The libFuzzer targets (fuzz/, nightly Rust with AddressSanitizer, or stable without it),
# SECONDS each: SMARTHOST_FUZZ_SECONDS=300 bash contrib/test.sh. Off by default: the
# instrumented build of every dependency costs about 6 minutes on a clean 2-core machine,
# and `cargo test` above already replays every committed seed and crash and runs the same
# properties on structured random input.
if [ "${SMARTHOST_FUZZ_SECONDS:-0}" -gt 0 ]; then
  bash contrib/fuzz.sh "$SMARTHOST_FUZZ_SECONDS"
fi
