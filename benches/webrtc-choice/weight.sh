#!/usr/bin/env bash
# Build weight of each library alone: a tiny binary that depends on just that library,
# clean `cargo build --release` in its own target dir under /tmp, one after the other.
# Uses this crate's Cargo.lock as the starting point so versions match the benchmark.
# Prints one JSON line per library.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root=/tmp/webrtc-choice-weight
mkdir -p "$root"

make_crate() { # name dep-line main-body
  local dir="$root/$1"
  rm -rf "$dir"; mkdir -p "$dir/src"
  cat > "$dir/Cargo.toml" <<TOML
[package]
name = "weight-$1"
version = "0.1.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
$2
TOML
  printf '%s\n' "$3" > "$dir/src/main.rs"
  cp "$here/Cargo.lock" "$dir/Cargo.lock"
}

make_crate str0m 'str0m = { version = "=0.25.0", default-features = false, features = ["aws-lc-rs"] }' \
'fn main() {
    let rtc = str0m::Rtc::builder().set_ice_lite(true).build(std::time::Instant::now());
    println!("{}", rtc.is_alive());
}'

make_crate rtc 'rtc = "=0.21.1"' \
'fn main() {
    let pc = rtc::peer_connection::RTCPeerConnectionBuilder::new().build(std::time::Instant::now());
    println!("{}", pc.is_ok());
}'

for lib in str0m rtc; do
  dir="$root/$lib"
  export CARGO_TARGET_DIR="/tmp/webrtc-choice-weight-target-$lib"
  rm -rf "$CARGO_TARGET_DIR"
  ( cd "$dir" && cargo fetch --quiet )
  t0=$(date +%s.%N)
  ( cd "$dir" && cargo build --release --offline --quiet )
  t1=$(date +%s.%N)
  crates=$(cd "$dir" && cargo tree -e normal --prefix none --offline | sort -u | wc -l)
  # Crates with a build script that compiles C/C++ (cc) or drives cmake.
  # build-graph crates that drive a C toolchain
  native=$(cd "$dir" && cargo tree -e normal,build --prefix none --offline | sed 's/ (\*)//; s/ .*//' | sort -u | grep -xE 'cc|cmake|bindgen' | tr '\n' ' ')
  cbuild=$(cd "$dir" && cargo tree -e normal --prefix none --offline | sed 's/ (\*)//' | awk '{print $1}' | sort -u | grep -xE 'ring|aws-lc-sys|aws-lc-fips-sys|openssl-sys' | tr '\n' ' ')
  size=$(stat -c %s "$CARGO_TARGET_DIR/release/weight-$lib")
  # The `cmake` crate being in the build graph does not mean cmake ran: aws-lc-sys uses its
  # cc-based builder unless AWS_LC_SYS_CMAKE_BUILDER=1. Look for a CMake cache to be sure.
  if find "$CARGO_TARGET_DIR/release/build" -name CMakeCache.txt | grep -q .; then cm=true; else cm=false; fi
  printf '{"lib":"%s","clean_release_build_s":%.1f,"crates_normal":%s,"c_sys_crates":"%s","build_tools":"%s","cmake_binary_invoked":%s,"binary_bytes":%s}\n' \
    "$lib" "$(echo "$t1 - $t0" | bc)" "$crates" "${cbuild% }" "${native% }" "$cm" "$size"
done
