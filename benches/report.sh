#!/usr/bin/env bash
# One benchmark report: the README's performance commands run in one sitting and printed as one
# Markdown table, headed by the machine (cores, CPU model, load average), the commit and the date,
# so the README's table can be this output and nothing in it outlives the code it was measured on.
#   benches/report.sh              everything (about 10 minutes on 2 cores)
#   benches/report.sh intake call  only some parts: intake, call, queue, outbound, criterion, speech
# Run it on an otherwise idle machine; the load average is printed before and after so a busy
# one shows. The report is also written to target/bench-report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
parts=("$@")
[ "${#parts[@]}" -gt 0 ] || parts=(intake call queue outbound criterion speech)
want() { [[ " ${parts[*]} " == *" $1 "* ]]; }

echo "report: building (release)" >&2
cargo build --release --locked -p gateway -p benches >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rows=()
row() { rows+=("| $1 | $2 | \`$3\` |"); }

# A SUMMARY line's `key=value` field.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

if want intake; then
  cmd="target/release/intake-load --spawn target/release/gateway --connections 128 --duration 15 --warmup 3"
  echo "report: $cmd" >&2
  $cmd >"$work/intake.txt" 2>&1 || true
  s=$(grep '^SUMMARY' "$work/intake.txt" || echo "SUMMARY failed")
  row "durable HTTP submissions (SQLite, fsync before every 202), 128 connections" \
    "$(field "$s" rate), p99 $(field "$s" p99), errors $(field "$s" errors), gateway CPU $(field "$s" gw_cpu) per request, generator $(field "$s" gen_cpu)" \
    "$cmd"
fi

if want call; then
  realtime=()
  if [ "$(id -u)" = 0 ]; then realtime=(--realtime 5); fi
  # Ports of their own per call (the default), then the pacers' shared sockets
  # (`[media] rtp_sockets = "shared"`), up to 4,000 calls.
  for run in 1000:per_call 2000:per_call 2000:shared 4000:shared; do
    calls=${run%%:*} sockets=${run#*:}
    env=()
    [ "$sockets" = per_call ] || env=(--gateway-env "GATEWAY__MEDIA__RTP_SOCKETS=$sockets")
    # 4,000 calls' generator ports (two each from 30000) would reach the gateway's range.
    [ "$calls" -lt 4000 ] || env+=(--rtp-ports 20000)
    cmd="target/release/call-load --spawn target/release/gateway ${env[*]} ${realtime[*]} --calls $calls --rate 500 --hold 30 --digits 1 --dtmf-after 3"
    echo "report: $cmd" >&2
    $cmd >"$work/call-$run.txt" 2>&1 || true
    s=$(grep '^SUMMARY' "$work/call-$run.txt" || echo "SUMMARY failed")
    row "SIP calls: $calls concurrent IVR calls set up at 500/s, held 30 s, RTP sockets $sockets" \
      "late > 5 ms $(field "$s" 'late>5ms') $(tr ' ' '\n' <<<"$s" | grep -m1 '^(' || true) (max $(field "$s" late_max)), setups $(field "$s" setups), INVITE→200 p99 $(field "$s" setup_p99), gateway $(field "$s" gateway_cpu) of a core, generator $(field "$s" generator_cpu)" \
      "$cmd"
  done
fi

if want queue; then
  realtime=()
  if [ "$(id -u)" = 0 ]; then realtime=(--realtime 5); fi
  # Issue #14: 1,500 calls, every third keys 1 into an IVR loop of prompts, the other 1,000 wait
  # in queue hotline for an agent who never answers (hold music, a spoken place every 10 s).
  cmd="target/release/call-load --spawn target/release/gateway --gateway-config benches/queue-load.toml ${realtime[*]} --calls 1500 --rate 100 --hold 60 --digits 1 --digits-every 3 --dtmf-after 2 --gateway-metric 'gateway_queue_waiting{queue=\"hotline\"}'"
  echo "report: $cmd" >&2
  target/release/call-load --spawn target/release/gateway --gateway-config benches/queue-load.toml \
    "${realtime[@]}" --calls 1500 --rate 100 --hold 60 --digits 1 --digits-every 3 --dtmf-after 2 \
    --gateway-metric 'gateway_queue_waiting{queue="hotline"}' >"$work/queue.txt" 2>&1 || true
  s=$(grep '^SUMMARY' "$work/queue.txt" || echo "SUMMARY failed")
  row "SIP calls: 1000 waiting in a queue (hold music, announcements every 10 s) + 500 in an IVR prompt loop, set up at 100/s, held 60 s" \
    "queue peak $(field "$s" metric_peak) waiting, late > 5 ms $(field "$s" 'late>5ms') $(tr ' ' '\n' <<<"$s" | grep -m1 '^(' || true) (max $(field "$s" late_max)), lost $(field "$s" lost), INVITE→200 p99 $(field "$s" setup_p99), gateway $(field "$s" gateway_cpu) of a core, generator $(field "$s" generator_cpu)" \
    "$cmd"
fi

if want outbound; then
  # Issue #14: outbound calls a second, POST /v1/calls to a trunk that answers at once.
  cmd="benches/outbound-setup.py --gateway target/release/gateway --calls 500 --cps 200 --max-calls 500"
  echo "report: $cmd" >&2
  $cmd >"$work/outbound.txt" 2>&1 || true
  s=$(grep '^SUMMARY' "$work/outbound.txt" || echo "SUMMARY failed")
  row "outbound calls: 500 POST /v1/calls (calls_per_second 200, max_calls 500) to a trunk that answers at once, a 3 s prompt each" \
    "setups $(field "$s" setups) (first POST → last ACK), INVITEs $(field "$s" invite_rate) (most in any 1 s $(field "$s" peak_1s)), POST→INVITE p50 $(field "$s" post_invite_p50) p99 $(field "$s" post_invite_p99), late > 5 ms $(field "$s" 'late>5ms') of $(field "$s" rtp) (max $(field "$s" late_max)), gateway $(field "$s" gateway_cpu) of a core" \
    "$cmd"
fi

if want criterion; then
  for bench in hot_paths ivr store; do
    cmd="cargo bench -p benches --bench $bench"
    echo "report: $cmd" >&2
    CRITERION_HOME="$work/criterion" $cmd >"$work/$bench.txt" 2>/dev/null || true
    # `name time: [low mid high]`, the name sometimes on the line before; the middle value, and
    # the middle throughput after it where the bench states one (the store's orders per second).
    awk '
      /^[A-Za-z0-9_\/-]+$/ { name = $1; next }
      /time:[ \t]+\[[0-9]/ {
        if ($1 != "time:") name = $1
        sub(/.*\[/, ""); split($0, v, " ")
        order[++n] = name; fig[name] = v[3] " " v[4]
      }
      /thrpt:[ \t]+\[[0-9]/ { sub(/.*\[/, ""); split($0, v, " "); fig[name] = fig[name] " (" v[3] " " v[4] ")" }
      END { for (i = 1; i <= n; i++) printf "%s %s\n", order[i], fig[order[i]] }
    ' "$work/$bench.txt" >"$work/$bench.figures"
    figures=$(awk '{ name = $1; $1 = ""; printf "%s%s%s", (NR > 1 ? ", " : ""), name, $0 }' "$work/$bench.figures")
    row "criterion \`$bench\` (median time per iteration, and throughput where the bench states one)" "${figures:-failed}" "$cmd"
  done
fi

if want speech; then
  cmd="cargo run --release -p speech-models --features recognizer --example latency -- 4"
  echo "report: $cmd" >&2
  $cmd >"$work/speech.txt" 2>/dev/null || true
  figures=$(grep -E 'concurrent caller|3 s utterance' "$work/speech.txt" | sed 's/  */ /g' | paste -sd ';' - | sed 's/;/; /g')
  # The model format the example ran (its first line: "model q8_0; pool: ...").
  format=$(sed -n 's/^model \([a-z0-9_]*\);.*/\1/p' "$work/speech.txt")
  row "speech: end of speech → final text (Whisper base ${format:-?}, a 1 s answer over G.711; a 3 s utterance)" \
    "${figures:-failed}" "$cmd"
fi

cpu=$(sed -n 's/^model name[ \t]*: //p' /proc/cpuinfo | head -1)
{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu), commit $(git describe --always --dirty)."
  echo "Load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg). Generator and gateway on the same cores, over loopback."
  echo
  echo "| what | figure | command |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee target/bench-report.md
