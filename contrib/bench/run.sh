#!/usr/bin/env bash
# The benchmark against Postfix, nullmailer, dma and msmtp (see contrib/bench/bench.py). Installs Postfix and
# PostgreSQL without configuring or using the system's own instances (it runs private ones:
# Postfix on loopback, PostgreSQL on a Unix socket in its work directory), builds smarthost in
# release mode, and runs every scenario. Pass --quick for a short run.
set -euo pipefail
cd "$(dirname "$0")/../.."
# nullmailer and dma are never installed (they would replace the system's MTA): bench.py
# fetches them with `apt-get download` and runs them from dpkg -x in a private mount
# namespace (peers.py), which needs apt's package lists.
if ! command -v smtp-source >/dev/null 2>&1 || ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    || ! command -v msmtp >/dev/null 2>&1 || ! apt-cache show nullmailer dma >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postfix postgresql msmtp
fi
cargo build --release --locked
exec python3 contrib/bench/bench.py --smarthost target/release/smarthost --out target/bench "$@"
