#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for SECONDS each (default 60): bash contrib/fuzz.sh [SECONDS]
#
# With a nightly toolchain the targets are built with AddressSanitizer; on stable, with
# coverage instrumentation only (libFuzzer needs no more). Each target starts from its
# committed seeds in fuzz/corpus/<target>/ and the SMTP dictionary fuzz/smtp.dict; what it
# learns goes to target/fuzz-corpus/<target>/ (not committed). A crash stops the run with the
# input in fuzz/artifacts/<target>/: add that file to fuzz/corpus/<target>/ (then `cargo test`
# replays it for ever) and fix the code.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
targets=(command session data_framing header_rewrite sendmail_args config)

flags="--cfg fuzzing -Cpasses=sancov-module"
for option in level=4 inline-8bit-counters pc-table trace-compares; do
  flags="$flags -Cllvm-args=-sanitizer-coverage-$option"
done
toolchain=()
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
  flags="$flags -Zsanitizer=address"
fi
# An explicit --target keeps the instrumentation out of build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="$flags" cargo "${toolchain[@]}" build --profile fuzz --locked --target "$triple" --bins

for target in "${targets[@]}"; do
  learned="target/fuzz-corpus/$target"
  mkdir -p "$learned" "artifacts/$target"
  log="target/fuzz-$target.log"
  echo "fuzzing $target for ${seconds}s"
  status=0
  "target/$triple/fuzz/$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -dict=smtp.dict -artifact_prefix="artifacts/$target/" -print_final_stats=1 \
    "$learned" "corpus/$target" >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed (exit $status): the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
