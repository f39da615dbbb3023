#!/usr/bin/env bash
# The Debian package end to end (README "Install"; .ci/run runs it after the tests):
#   1. build it (from the binary `cargo test` built, to skip a release build here:
#      contrib/package.sh is the same either way),
#   2. check its fields and files (dpkg-deb) and that lintian finds no error,
#   3. install it into a clean Debian 12 root made with debootstrap, and there: cron's
#      sendmail call queues into /var/spool/smarthost (owned by the smarthost user), mailq
#      lists the message, newaliases exits 0.
# Installs debootstrap and lintian when missing. The root is made under target/ and removed.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

binary=target/debug/smarthost
[ -x "$binary" ] || cargo build --locked
deb="$(bash contrib/package.sh --binary "$binary" | tail -n1)"
echo "package: $deb"
fail() { echo "package-test: $*" >&2; exit 1; }

# 2. Fields and files.
for field in Provides Conflicts Replaces; do
  [ "$(dpkg-deb --field "$deb" "$field")" = "mail-transport-agent" ] \
    || fail "$field is not mail-transport-agent"
done
dpkg-deb --field "$deb" Depends | grep -q adduser || fail "Depends lacks adduser"
contents="$(dpkg-deb --contents "$deb")"
for path in ./usr/bin/smarthost ./usr/sbin/sendmail ./usr/lib/sendmail ./usr/bin/mailq \
    ./usr/bin/newaliases ./etc/smarthost/smarthost.toml ./lib/systemd/system/smarthost.service \
    ./usr/share/man/man8/smarthost.8.gz ./usr/share/man/man8/smarthost-serve.8.gz \
    ./usr/share/man/man5/smarthost.toml.5.gz ./usr/share/man/man8/sendmail.8.gz \
    ./usr/share/bash-completion/completions/smarthost ./usr/share/zsh/vendor-completions/_smarthost \
    ./usr/share/fish/vendor_completions.d/smarthost.fish \
    ./usr/share/smarthost/monitoring/smarthost-alerts.yml; do
  grep -q " $path\( \|$\)" <<<"$contents" || fail "$path is not in the package"
done
for link in ./usr/lib/sendmail ./usr/bin/mailq ./usr/bin/newaliases; do
  grep -q "$link -> .*sbin/sendmail$" <<<"$contents" || fail "$link is not a link to sendmail"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/smarthost/smarthost.toml \
  || fail "the configuration is not a conffile"
lintian --fail-on error --tag-display-limit 0 "$deb" || fail "lintian reports errors"

# 3. A clean Debian 12 root (the mirror apt uses here, read at run time).
mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
mirror="${mirror:-http://deb.debian.org/debian}"
root="$(mktemp -d "$PWD/target/debian/root.XXXXXX")"
cleanup() { rm -rf "$root"; }
trap cleanup EXIT
debootstrap --variant=minbase --include=adduser bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log"; fail "debootstrap failed"; }
rm -f "$root.log"
cp "$deb" "$root/tmp/smarthost.deb"
chroot "$root" dpkg -i /tmp/smarthost.deb || fail "dpkg -i failed"
chroot "$root" getent passwd smarthost >/dev/null || fail "no smarthost user"
# Names as the root's own /etc/passwd has them.
owner() { chroot "$root" stat -c "$1" "$2"; }
[ "$(owner '%U %a' /var/spool/smarthost)" = "smarthost 700" ] \
  || fail "/var/spool/smarthost is $(owner '%U %a' /var/spool/smarthost), not smarthost 700"

printf 'Subject: cron\n\nbackup done\n' \
  | chroot "$root" /usr/sbin/sendmail -FCronDaemon -i -B8BITMIME -oem root \
  || fail "cron's sendmail call failed"
[ "$(owner %U /var/spool/smarthost/spool.db)" = "smarthost" ] \
  || fail "root's sendmail left the spool owned by $(owner %U /var/spool/smarthost/spool.db)"
queue="$(chroot "$root" mailq)"
echo "$queue"
grep -q "postmaster@example.com" <<<"$queue" || fail "mailq does not list the message"
chroot "$root" newaliases || fail "newaliases failed"
chroot "$root" dpkg --purge smarthost >/dev/null || fail "purge failed"
[ ! -e "$root/var/spool/smarthost" ] || fail "purge left the spool"
echo "package-test: all passed"
