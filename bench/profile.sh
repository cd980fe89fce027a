#!/usr/bin/env bash
# profile.sh - CPU profile of the proxy (and Redis' own per-command cost) under one load.
#
#   bench/profile.sh [redis-benchmark command args...]      default: -t get
#   e.g. bench/profile.sh HSET session:__rand_int__ userid 42
#
# Starts redis + proxy, runs redis-benchmark -c CLIENTS -P PIPELINE through the proxy for about
# SECS seconds while taking /debug/pprof/profile, then prints the top of the profile, the
# proxy's and redis-server's CPU over the window (% of one core) and Redis' INFO commandstats.
# Env: CLIENTS (50) PIPELINE (16) SECS (10) PROCS
# Output: bench/results/<timestamp>-profile/{cpu.pprof,top.txt,commandstats.txt}
source "$(dirname "$0")/lib.sh"
CLIENTS=${CLIENTS:-50}; PIPELINE=${PIPELINE:-16}; SECS=${SECS:-10}
[ $# -gt 0 ] || set -- -t get
OUT=$(results_dir profile)
log "expected duration: ~$((SECS + 25))s; results in $OUT"
build_proxy
start_redis
start_proxy
"$RB" -h $HOST -p "$REDIS_PORT" -c 50 -P 16 -n 1200000 -r 100000 -t set -q >/dev/null 2>&1
# calibrate n to ~SECS+2 s through the proxy
read -r probe _ < <(rb_rps "$PROXY_PORT" $((PIPELINE > 1 ? 100000 : 20000)) "$CLIENTS" "$PIPELINE" "$@")
n=$(awk -v r="$probe" -v s="$SECS" 'BEGIN{printf "%d", r*(s+2)}')
"$RCLI" -h $HOST -p "$REDIS_PORT" config resetstat >/dev/null
"$RB" -h $HOST -p "$PROXY_PORT" -c "$CLIENTS" -P "$PIPELINE" -n "$n" -r 100000 --csv "$@" >"$OUT/load.csv" 2>/dev/null &
LOAD=$!; PIDS+=("$LOAD")
sleep 1
c0=$(cpu_ticks "$PROXY_PID"); r0=$(cpu_ticks "$REDIS_PID"); t0=$(now_s)
curl -s -o "$OUT/cpu.pprof" "http://$HOST:$ADMIN_PORT/debug/pprof/profile?seconds=$SECS"
c1=$(cpu_ticks "$PROXY_PID"); r1=$(cpu_ticks "$REDIS_PID"); t1=$(now_s)
wait "$LOAD"
"$RCLI" -h $HOST -p "$REDIS_PORT" info commandstats | grep -v '^#' | tr -d '\r' | grep . >"$OUT/commandstats.txt"
{
  machine_info
  echo "load: redis-benchmark -c $CLIENTS -P $PIPELINE $* (through the proxy): $(tail -1 "$OUT/load.csv")"
  awk -v a="$c0" -v b="$c1" -v c="$r0" -v d="$r1" -v s="$t0" -v e="$t1" -v hz="$CLK_TCK" \
    'BEGIN{printf "cpu over %.1fs: proxy %.0f%%, redis-server %.0f%% of one core\n", e-s, 100*(b-a)/hz/(e-s), 100*(d-c)/hz/(e-s)}'
  echo "redis commandstats:"; cat "$OUT/commandstats.txt"
  echo
  go tool pprof -top -nodecount 40 "$PROXY_BIN" "$OUT/cpu.pprof" 2>/dev/null
} | tee "$OUT/top.txt"
cp "$PROXY_BIN" "$OUT/sessionproxy.bin"
log "done: $OUT/top.txt  (go tool pprof $OUT/sessionproxy.bin $OUT/cpu.pprof)"
