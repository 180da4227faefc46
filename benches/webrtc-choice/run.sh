#!/usr/bin/env bash
# Build both benchmark binaries and run each ROUNDS times (alternating, so background load hits
# both alike), then print the per-metric median of each as one JSON line per library.
# Raw runs go to /tmp/webrtc-choice-results/. Env: ROUNDS (default 5), plus the binaries' own
# SETUP_CALLS (200), STEADY_CALLS (100), STEADY_SECS (10).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/webrtc-choice-target}
rounds=${ROUNDS:-5}
out=/tmp/webrtc-choice-results
mkdir -p "$out"; rm -f "$out"/*.jsonl
cargo build --release --quiet
echo "# $(nproc) cores; load before: $(uptime | sed 's/.*load average: //')" >&2
for r in $(seq 1 "$rounds"); do
  for b in str0m_bench rtc_bench; do
    "$CARGO_TARGET_DIR/release/$b" >> "$out/$b.jsonl"
  done
done
echo "# load after: $(uptime | sed 's/.*load average: //')" >&2
python3 - "$out" <<'PY'
import json, statistics, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl"), reverse=True):
    runs = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    med = {}
    for k, v in runs[0].items():
        vals = [r[k] for r in runs]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            med[k] = round(statistics.median(vals), 1)
            if k.endswith("_us_per_call_second") or k.startswith("setup_cpu"):
                med[k + "_min_max"] = [min(vals), max(vals)]
        else:
            med[k] = v if all(r[k] == v for r in runs) else vals
    med["runs"] = len(runs)
    print(json.dumps(med))
PY
