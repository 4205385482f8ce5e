#!/bin/sh
# Runs one libFuzzer target for a while on a scratch copy of its seed corpus, so that
# the inputs libFuzzer adds never land in the repository.
#
#   Tests/Fuzz/run.sh BINARY SEEDS SCRATCH SECONDS
#
# Exits 0 when the target ran for SECONDS without a crash, a leak, a timeout or a
# failed invariant. Otherwise prints the report, the crashing input's path and its
# base64, and exits 1.
set -u
binary=$1 seeds=$2 scratch=$3 seconds=$4
name=${binary##*/}

rm -rf "$scratch"
mkdir -p "$scratch/corpus" "$scratch/artifacts"
cp "$seeds"/* "$scratch/corpus/" 2>/dev/null

# SWIFT_BACKTRACE: the Swift runtime's own crash handler trips ASan; libFuzzer prints the stack.
# -timeout: one input taking 10 s is a hang worth reporting (the parsers are linear).
# -max_len: room for the long seeds; the options read here are short in practice.
SWIFT_BACKTRACE=enable=no "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$scratch/artifacts/" "$scratch/corpus" \
    >"$scratch/log" 2>&1
status=$?
crash=$(find "$scratch/artifacts" -type f | head -n 1)

if [ "$status" = 0 ] && [ -z "$crash" ]; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/log")
    seeds_count=$(ls "$seeds" | wc -l)
    echo "fuzz: $name: no crash in ${seconds} s (${runs:-?} inputs from $seeds_count seeds)"
    exit 0
fi

echo "fuzz: $name: FAILED (libFuzzer exit status $status); full log: $scratch/log"
# The report: from the first error line to libFuzzer's summary.
sed -n '/==ERROR\|Fatal error\|fuzz invariant\|==[0-9]*== ERROR\|ALARM\|out-of-memory/,/^SUMMARY\|^MS: /p' \
    "$scratch/log" | head -n 80
if [ -n "$crash" ]; then
    echo "fuzz: $name: crashing input: $crash"
    echo "fuzz: $name: input (base64): $(base64 -w 0 "$crash")"
    echo "fuzz: $name: reproduce with: $binary $crash"
fi
exit 1
