#!/usr/bin/env bash
# Regenerates the reference prompt recordings under flows/prompts/<lang>/ from the texts in the
# flow files (every `zh: { text: "...", audio: prompts/... }` line) plus the number clips used by
# say_digits / say_number / say_order_number. Needs espeak-ng and sox
# (apt-get install -y espeak-ng sox). Output: 8 kHz mono 16-bit WAV.
set -euo pipefail
cd "$(dirname "$0")/flows"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

voice() { case "$1" in zh) echo cmn ;; *) echo en-us ;; esac; }

say() { # lang text out
  local lang=$1 text=$2 out=$3
  mkdir -p "$(dirname "$out")"
  espeak-ng -v "$(voice "$lang")" -s 330 -w "$tmp/x.wav" "$text"
  sox "$tmp/x.wav" -r 8000 -c 1 -b 16 "$out" silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse
}

# Prompts named in flow files (one clip per line, flow-style mapping).
grep -hoE '(zh|en): \{ text: "[^"]*", audio: prompts/[^ }]+' ./*.yaml | sort -u |
while IFS= read -r line; do
  lang=${line%%:*}
  text=$(sed -E 's/.*text: "([^"]*)".*/\1/' <<<"$line")
  path=$(sed -E 's/.*audio: (prompts\/[^ }]+).*/\1/' <<<"$line")
  say "$lang" "$text" "$path"
done

# Number clips.
zh_names=(0 1 2 3 4 5 6 7 8 9 10 hundred thousand wan)
zh_words=(零 一 二 三 四 五 六 七 八 九 十 百 千 万)
for i in "${!zh_names[@]}"; do say zh "${zh_words[$i]}" "prompts/zh/digits/${zh_names[$i]}.wav"; done
en_words=(zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
  fifteen sixteen seventeen eighteen nineteen)
for i in "${!en_words[@]}"; do say en "${en_words[$i]}" "prompts/en/digits/$i.wav"; done
tens=(twenty thirty forty fifty sixty seventy eighty ninety)
for i in "${!tens[@]}"; do say en "${tens[$i]}" "prompts/en/digits/$(( (i + 2) * 10 )).wav"; done
say en hundred prompts/en/digits/hundred.wav
say en thousand prompts/en/digits/thousand.wav
du -sh prompts
