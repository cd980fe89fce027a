#!/usr/bin/env bash
# cpusplit.sh - where the CPU goes at one load: per process, per request, for direct Redis and
# each hop (proxy, minrelay, twemproxy), plus how much the two kinds of waiting cost.
#
#   bench/cpusplit.sh            default: GET at -c 50 -P 16, 3 alternating rounds
#
# Per target and round it runs redis-benchmark and reads, over exactly that run:
#   - CPU per request of redis-benchmark, redis-server and the hop (utime+stime from /proc);
#   - each process's run-queue wait (/proc/<pid>/task/*/schedstat): runnable but not running;
#   - host idle (/proc/stat): both vCPUs with nothing to run.
# On a 2-vCPU host a hop's throughput is bounded by the vCPU that carries the most work; the
# "one-vCPU bound" column is 1e6 / (hop + redis µs per request), the rate if the hop and Redis
# share one vCPU and the benchmark has the other (what the kernel's wake-up placement does here,
# see bench/README.md). Env: ROUNDS (3) TEST (get) CLIENTS (50) PIPELINE (16) N (3000000) PROCS;
# PROXY_B=/path/to/sessionproxy adds that binary as target proxy-b (an A/B in the same rounds).
# GORELAY=1 adds minrelay -mode goroutines (the proxy's design alone) as target gorelay;
# PREDIXY as in run.sh (PREDIXY=none: no predixy column).
# CMD="HSET session:__rand_int__ userid 42" runs that command instead of -t TEST (e.g. session
# writes: the direct target then writes the same key without an index, the plain baseline).
# Output: bench/results/<timestamp>-cpusplit/{summary.txt,raw.csv}
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}; TEST=${TEST:-get}; CLIENTS=${CLIENTS:-50}; PIPELINE=${PIPELINE:-16}; N=${N:-3000000}
if [ -n "${CMD:-}" ]; then read -r -a LOAD <<<"$CMD"; else LOAD=(-t "$TEST"); fi
OUT=$(results_dir cpusplit)
log "expected duration: ~$((ROUNDS * 6 * 8 + 20))s; results in $OUT"
build_proxy
start_redis
start_proxy
start_minrelay
start_twemproxy
[ "${PREDIXY:-}" != none ] && start_predixy # see run.sh for PREDIXY, PREDIXY_SRC
[ -n "${GORELAY:-}" ] && start_gorelay # minrelay -mode goroutines: the goroutine design alone
[ -n "${PROXY_B:-}" ] && start_proxy_b
"$RB" -h $HOST -p "$REDIS_PORT" -c 50 -P 16 -n 1200000 -r 100000 -t set -q >/dev/null 2>&1

# runq_ns pid: run-queue wait of all the process's threads, in ns
runq_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.0f\n", s}'; }
# idle_ticks: idle+iowait ticks of all CPUs; all_ticks: every tick
idle_ticks() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
all_ticks() { awk '/^cpu /{s = 0; for (i = 2; i <= NF; i++) s += $i; print s}' /proc/stat; }

targets=("direct:$REDIS_PORT:" "proxy:$PROXY_PORT:$PROXY_PID" "minrelay:$MINRELAY_PORT:$MINRELAY_PID")
[ -n "$TWEM_PORT" ] && targets+=("twemproxy:$TWEM_PORT:$TWEM_PID")
[ -n "${PREDIXY_PORT:-}" ] && targets+=("predixy:$PREDIXY_PORT:$PREDIXY_PID")
[ -n "${GORELAY:-}" ] && targets+=("gorelay:$GORELAY_PORT:$GORELAY_PID")
[ -n "${PROXY_B:-}" ] && targets+=("proxy-b:$B_PORT:$B_PID")
echo "round,target,rps,bench_us,redis_us,hop_us,idle_pct,redis_runq_pct,hop_runq_pct" >"$OUT/raw.csv"
for round in $(seq "$ROUNDS"); do
  order=("${targets[@]}")
  if [ $((round % 2)) -eq 0 ]; then # alternate the order, as peerbench does
    order=(); for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[$i]}"); done
  fi
  for t in "${order[@]}"; do
    IFS=: read -r name port pid <<<"$t"
    h0=0 hq0=0 h1=0 hq1=0
    r0=$(cpu_ticks "$REDIS_PID"); q0=$(runq_ns "$REDIS_PID"); i0=$(idle_ticks); a0=$(all_ticks)
    [ -n "$pid" ] && { h0=$(cpu_ticks "$pid"); hq0=$(runq_ns "$pid"); }
    t0=$(now_s)
    bt=$( { TIMEFORMAT='%U %S'; time "$RB" -h $HOST -p "$port" -c "$CLIENTS" -P "$PIPELINE" -n "$N" \
      -r 100000 -q "${LOAD[@]}" >"$WORK/rb.out" 2>&1; } 2>&1 )
    t1=$(now_s)
    r1=$(cpu_ticks "$REDIS_PID"); q1=$(runq_ns "$REDIS_PID"); i1=$(idle_ticks); a1=$(all_ticks)
    [ -n "$pid" ] && { h1=$(cpu_ticks "$pid"); hq1=$(runq_ns "$pid"); }
    awk -v rd="$round" -v tg="$name" -v bt="$bt" -v r=$((r1 - r0)) -v h=$((h1 - h0)) -v q=$((q1 - q0)) \
      -v hq=$((hq1 - hq0)) -v id=$((i1 - i0)) -v al=$((a1 - a0)) -v s="$t0" -v e="$t1" -v n="$N" -v hz="$CLK_TCK" \
      'BEGIN{split(bt, b, " "); d = e - s
        printf "%d,%s,%.0f,%.2f,%.2f,%.2f,%.0f,%.0f,%.0f\n", rd, tg, n / d, 1e6 * (b[1] + b[2]) / n,
          1e6 * r / hz / n, 1e6 * h / hz / n, 100 * id / al, 100 * q / 1e9 / d, 100 * hq / 1e9 / d}' >>"$OUT/raw.csv"
    log "round $round $name: $(tail -1 "$OUT/raw.csv")"
  done
done

{
  machine_info
  echo "load: redis-benchmark -c $CLIENTS -P $PIPELINE ${LOAD[*]} -n $N, $ROUNDS alternating rounds; medians"
  echo "runq = run-queue wait, % of the run's wall time; idle = both vCPUs idle, % of all CPU time"
  echo
  printf "%-10s %9s %6s | %9s %9s %9s | %9s %6s %6s %6s\n" target rps ratio bench_us redis_us hop_us \
    "1vcpu_rps" idle% "runq_r" "runq_h"
  direct=$(awk -F, '$2 == "direct" {print $3}' "$OUT/raw.csv" | median)
  for t in "${targets[@]}"; do
    name=${t%%:*}
    col() { awk -F, -v t="$name" -v c="$1" '$2 == t {print $c}' "$OUT/raw.csv" | median; }
    rps=$(col 3) b=$(col 4) r=$(col 5) h=$(col 6)
    # the ratio is the median of same-round ratios, like peerbench's
    ratio=$(awk -F, -v t="$name" '$2 == "direct" {d[$1] = $3} $2 == t {x[$1] = $3} END {for (k in x) print x[k] / d[k]}' "$OUT/raw.csv" | median)
    bound=$(awk -v r="$r" -v h="$h" 'BEGIN{if (h > 0) printf "%.0f", 1e6 / (r + h); else print "-"}')
    printf "%-10s %9.0f %6.2f | %9s %9s %9s | %9s %6s %6s %6s\n" "$name" "$rps" "$ratio" "$b" "$r" "$h" "$bound" \
      "$(col 7)" "$(col 8)" "$(col 9)"
  done
  echo
  echo "direct rps (median): $direct"
} | tee "$OUT/summary.txt"
