#!/usr/bin/env bash
# Builds the Debian package: target/debian/smarthost_<version>_<arch>.deb.
#
#   bash contrib/package.sh            # release build, then the package
#   bash contrib/package.sh --binary target/debug/smarthost   # package an existing build
#                                      # (the test suite does this, to skip a release build;
#                                      # smarthost-sendmail is taken from the same directory)
#
# dpkg-buildpackage (debhelper) lays out a staging tree made here: the binaries (`smarthost`,
# and the lean `smarthost-sendmail` as /usr/sbin/sendmail, which cron starts), the man pages
# and completions it generates (`smarthost generate`), the packaged configuration, the
# systemd unit, the monitoring files, and contrib/debian/. Installs debhelper when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
if [ "${1:-}" = "--binary" ]; then
  binary="$2"
fi

if ! command -v dh >/dev/null 2>&1 || ! command -v dpkg-buildpackage >/dev/null 2>&1 \
    || ! command -v fakeroot >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debhelper dpkg-dev fakeroot
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -z "$binary" ]; then
  SMARTHOST_COMMIT="$commit" cargo build --release --locked
  binary=target/release/smarthost
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"

stage="target/debian/build/smarthost-$version"
rm -rf "$stage"
mkdir -p "$stage"
cp -r contrib/debian "$stage/debian"
cp contrib/systemd/smarthost.service "$stage/debian/smarthost.service"
cp "$binary" "$stage/smarthost"
cp "$(dirname "$binary")/smarthost-sendmail" "$stage/sendmail"
"$binary" generate man "$stage/man" >/dev/null
cp contrib/man/sendmail.8 "$stage/man/"
"$binary" generate completions "$stage/completions-flat" >/dev/null
mkdir -p "$stage/completions/bash" "$stage/completions/zsh" "$stage/completions/fish"
mv "$stage/completions-flat/smarthost.bash" "$stage/completions/bash/smarthost"
mv "$stage/completions-flat/_smarthost" "$stage/completions/zsh/_smarthost"
mv "$stage/completions-flat/smarthost.fish" "$stage/completions/fish/smarthost.fish"
rmdir "$stage/completions-flat"
cp -r contrib/monitoring contrib/cloud-init "$stage/"
# The packaged configuration: the annotated example, with the settings a packaged relay
# needs spelled out (where mail for root goes, the upstream password as a credential).
python3 contrib/debian/packaged_config.py config/smarthost.toml > "$stage/smarthost.toml"
cat > "$stage/debian/changelog" <<CHANGELOG
smarthost ($version-1) unstable; urgency=medium

  * Built from commit $commit.

 -- smarthost developers <smarthost@users.noreply.github.com>  $(date -R)
CHANGELOG

(cd "$stage" && DEB_BUILD_OPTIONS="noautodbgsym nocheck" dpkg-buildpackage -b -us -uc --no-sign -rfakeroot >../build.log 2>&1) \
  || { tail -n 40 "target/debian/build/build.log"; exit 1; }
mkdir -p target/debian
mv target/debian/build/smarthost_"$version"-1_*.deb target/debian/
deb="$(ls target/debian/smarthost_"$version"-1_*.deb)"
# The name the issue asks for: smarthost_<version>_<arch>.deb.
arch="$(dpkg-deb --field "$deb" Architecture)"
mv "$deb" "target/debian/smarthost_${version}_${arch}.deb"
echo "target/debian/smarthost_${version}_${arch}.deb"
