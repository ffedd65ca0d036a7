#!/usr/bin/env bash
# The README's Performance figures in one command: capacity (bench load), the conversation's latencies idle
# and inside a live call (bench conversation, bench conversation --call) and the call's end-to-end latency
# (bench latency), each as JSON in benchmarks/results/ (the Markdown tables and plots in docs/bench/).
#
#   scripts/perf_figures.sh            # wait for a quiet machine (1-min load < 1), then run everything
#   MAX_LOAD=2 scripts/perf_figures.sh # accept a busier machine (the figures say which load they ran at)
#
# On a shared machine it takes the benchmark lock (/work/coord/bench.lock when it exists) so that only one
# benchmark runs at a time, and prints the load average before and after each run.
set -euo pipefail
cd "$(dirname "$0")/.."
SPLATCAST=${SPLATCAST:-splatcast}
MAX_LOAD=${MAX_LOAD:-1.0}
OUT=benchmarks/results
mkdir -p "$OUT" docs/bench
LOCK=/work/coord/bench.lock

load1() { cut -d' ' -f1 /proc/loadavg; }

wait_quiet() {
  while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }'; do
    echo "waiting for a quiet machine: 1-min load $(load1) (want < $MAX_LOAD)" >&2
    sleep 30
  done
}

run() {  # run NAME CMD...: under the lock, on a quiet machine, load average before and after
  local name=$1; shift
  local lock=()
  [ -w "$(dirname "$LOCK")" ] && lock=(flock "$LOCK")
  wait_quiet
  echo "== $name: $(uptime)" >&2
  "${lock[@]}" "$@"
  echo "== $name done: $(uptime)" >&2
}

run load "$SPLATCAST" bench load --sessions 4 --duration 20 --json "$OUT/load.json" --report docs/bench
run conversation "$SPLATCAST" bench conversation --repeats 10 --json >"$OUT/conversation.json"
run conversation-call "$SPLATCAST" bench conversation --call --repeats 10 --json >"$OUT/conversation_call.json"
run latency "$SPLATCAST" bench latency --sessions 1 --duration 60 --json "$OUT/latency.json" --report docs/bench
