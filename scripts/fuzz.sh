#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 60; `.ci/run` passes 10), starting from the
# committed seeds in fuzz/seeds/TARGET (crashes found earlier are kept there, so each run
# replays them first). Any crash, leak or timeout fails the run and leaves its input in
# fuzz/artifacts/TARGET/: add that file to fuzz/seeds/TARGET and a unit test where the bug was.
#   scripts/fuzz.sh            60 s per target
#   scripts/fuzz.sh 600 sdp    10 minutes on one target
#   FUZZ_SEED=N                the mutations' seed (0, the default: a new one each run;
#                              `scripts/test.sh` fixes it so CI explores the same inputs each time)
#   FUZZ_BUILD=dev             an unoptimised build (`scripts/test.sh`): about 6 minutes instead
#                              of 14 on two cores, about 20x fewer runs a second; it replays
#                              every seed and earlier crash all the same
#   FUZZ_JOBS=N                targets run at once (default: one per core)
# The fuzz crate depends only on the crates it fuzzes (no gateway, no whisper.cpp), so the
# build takes minutes. cargo-fuzz runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (the
# address sanitizer runtime ships with stable).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
# The committed lock file must be current: fail here rather than let cargo rewrite it.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

cd fuzz
all=$(cargo fuzz list)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || read -r -d '' -a targets <<<"$all" || true
# Long runs should keep the default, optimised build (see FUZZ_BUILD above).
build_flags=(--debug-assertions)
[ "${FUZZ_BUILD:-release}" = dev ] && build_flags+=(--dev)
echo "== cargo fuzz build (${#targets[@]} targets, ${FUZZ_BUILD:-release})"
cargo fuzz build "${build_flags[@]}" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One target per core at a time: each run is time-boxed, so two cores halve the wall time.
jobs_max="${FUZZ_JOBS:-$(nproc)}"
run_one() {
  local t="$1"
  if [ ! -d "seeds/$t" ] || [ -z "$(ls -A "seeds/$t")" ]; then
    echo "fuzz: $t has no seeds in fuzz/seeds/$t" >"$work/$t.result"; return 1
  fi
  mkdir -p "$work/$t"
  if cargo fuzz run "${build_flags[@]}" "$t" "$work/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -seed="${FUZZ_SEED:-0}" \
      >"$work/$t.log" 2>&1; then
    runs=$(grep -m1 'stat::number_of_executed_units' "$work/$t.log" | awk '{print $2}')
    echo "fuzz: $t ok (${runs:-?} runs in ${secs} s)" >"$work/$t.result"
  else
    {
      echo "fuzz: $t FAILED"
      grep -m3 -A6 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$work/$t.log" || true
      grep -A2 "Failing input" "$work/$t.log" || tail -n 20 "$work/$t.log"
    } >"$work/$t.result"
    return 1
  fi
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  run_one "$t" &
done
wait || true
failed=()
for t in "${targets[@]}"; do
  cat "$work/$t.result" 2>/dev/null || echo "fuzz: $t did not run"
  grep -q " ok (" "$work/$t.result" 2>/dev/null || failed+=("$t")
done
n=${#targets[@]}
echo "fuzz: ${#failed[@]} of $n targets failed${failed[*]:+: ${failed[*]}}"
[ "${#failed[@]}" -eq 0 ]
