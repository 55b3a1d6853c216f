#!/usr/bin/env bash
# Runs every fuzz target for a bounded time with libFuzzer (cargo fuzz), failing on any
# crash, panic, timeout or excessive allocation. A crashing input is copied to
# fuzz/regressions/<target>/ so that it becomes a regression test (see
# crates/ferrocast-protocol/tests/fuzz_regressions.rs and crates/ferrocast-node/tests/).
#
#   fuzz/run.sh            # 20 s per target
#   FUZZ_SECONDS=300 fuzz/run.sh
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
# cargo fuzz passes nightly-only flags; the stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1
status=0
for target in command_decoder envelope_decoder protobuf_decoder jwt wildcard_matcher; do
  echo "== fuzzing $target for ${seconds}s"
  mkdir -p "corpus/$target" "regressions/$target"
  if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" "regressions/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len=65536 \
      -timeout=10 -print_final_stats=1 2>"/tmp/fuzz-$target.log"; then
    echo "!! $target failed; crashing inputs:"
    for f in artifacts/"$target"/*; do
      [ -e "$f" ] || continue
      cp "$f" "regressions/$target/"
      echo "   $f -> regressions/$target/$(basename "$f")"
    done
    tail -n 40 "/tmp/fuzz-$target.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "/tmp/fuzz-$target.log" | tail -n 2 || true
  fi
done
exit "$status"
