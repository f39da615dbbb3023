#!/usr/bin/env bash
# The benchmark against Postfix (see contrib/bench/bench.py). Installs Postfix and
# PostgreSQL without configuring or using the system's own instances (it runs private ones:
# Postfix on loopback, PostgreSQL on a Unix socket in its work directory), builds smarthost in
# release mode, and runs every scenario. Pass --quick for a short run.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v smtp-source >/dev/null 2>&1 || ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postfix postgresql
fi
cargo build --release --locked
exec python3 contrib/bench/bench.py --smarthost target/release/smarthost --out target/bench "$@"
