#!/usr/bin/env bash
# reap.sh - expiry cleanup cost: 100,000 sessions whose deadlines fall within 10 s.
#
# Per mode (events: keyspace notifications on, the proxy enables them itself; sweep: redis
# notify-keyspace-events "" and SESSIONPROXY_REAPER_NOTIFICATIONS=false), on a fresh redis+proxy:
#   1. load alone:   redis-benchmark -t set,get -c 50 -P 1 through the proxy, ~LOAD_SECS (14)
#   2. batch A:      write SESSIONS sessions through the proxy (redis-cli --pipe: HSET userid +
#                    PEXPIREAT), deadlines spread uniformly over 1..10 s after the write is done;
#                    then at once the same load while they expire; wait until all are reaped
#   3. batch B:      the same write with no load: the proxy's CPU from write end to last cleanup is
#                    the reaper's own cost (redis-server CPU reported beside it)
#   4. load alone again (baseline, after)
# Reported: reap lag p50/p99 per path (event, sweep) from the sessionproxy_reaper_lag_seconds
# histogram (delta over each batch, linear interpolation inside buckets like histogram_quantile),
# load rps with expiries / mean of the two baselines, proxy CPU % of one core over each window.
#
# Env: MODES ("events sweep") SESSIONS (100000) LOAD_SECS (14) PROCS
#      PROXY_ENV: extra proxy env, e.g. "SESSIONPROXY_REAPER_INTERVAL=250ms"
#      PROFILE=1: also a CPU profile of the proxy during batch B (<mode>-B-cpu.pprof)
# Output: bench/results/<timestamp>-reap/{reap.txt,reap.csv,*.metrics}
source "$(dirname "$0")/lib.sh"

MODES=${MODES:-"events sweep"}; SESSIONS=${SESSIONS:-100000}; LOAD_SECS=${LOAD_SECS:-14}
OUT=$(results_dir reap)
est=$(awk -v m="$(wc -w <<<"$MODES")" -v l="$LOAD_SECS" 'BEGIN{printf "%d", m*(3*l + 2*15 + 20)}')
log "expected duration: ~${est}s (+ build; at most +60s per batch if reaping stalls); results in $OUT"
build_proxy
{ machine_info; echo "proxy env: ${PROXY_ENV:-none}"; } | tee "$OUT/summary.txt" >&2

# gen_sessions file tag start_ms: RESP for HSET session:reap<tag>-i userid uid + PEXPIREAT i deadline
gen_sessions() {
  awk -v n="$SESSIONS" -v tag="$2" -v t0="$3" 'BEGIN{srand(42)
    for(i=0;i<n;i++){ k="session:reap" tag "-" i; u="u" (i%1000); d=sprintf("%.0f", t0 + 1000 + int(rand()*9000))
      printf "*4\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$6\r\nuserid\r\n$%d\r\n%s\r\n", length(k), k, length(u), u
      printf "*3\r\n$9\r\nPEXPIREAT\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(d), d } }' >"$1"
}

# metric_sum file name [label-filter]: sum of a metric's samples
metric_sum() { awk -v m="$2" -v f="${3:-}" '$1 ~ "^"m"({|$)" && index($1, f) {s+=$2} END{printf "%d\n", s}' "$1"; }

# lag_quantiles before after path: "count p50 p99 pct_over_1.28s pct_over_2.56s" from the bucket
# deltas (seconds)
lag_quantiles() {
  awk -v path="$3" '
    function le(s){ sub(/.*le="/, "", s); sub(/".*/, "", s); return s }
    FNR==1{f++}
    $1 ~ /^sessionproxy_reaper_lag_seconds_bucket/ && index($1, "path=\"" path "\"") {
      b=le($1); if(f==1) before[b]=$2; else { after[b]=$2; if(!(b in seen)){seen[b]=1; bs[++nb]=b} } }
    function q(p,  i,c,prev,lo,hi,tot){ tot=d[nb]; if(tot<=0) return "nan"; prev=0; lo=0
      for(i=1;i<=nb;i++){ c=d[i]; hi=bs[i]
        if(c>=p*tot){ if(hi=="+Inf") return ">" lo; return lo + (hi-lo)*(p*tot-prev)/(c-prev) }
        prev=c; lo=hi } }
    END{ for(i=1;i<=nb;i++) d[i]=after[bs[i]]-before[bs[i]]
      if(nb==0 || d[nb]==0){print "0 - - - -"; exit}
      for(i=1;i<=nb;i++){ if(bs[i]=="1.28") u1=d[i]; if(bs[i]=="2.56") u2=d[i] }
      printf "%d %.3f %.3f %.2f %.2f\n", d[nb], q(0.5), q(0.99), 100*(d[nb]-u1)/d[nb], 100*(d[nb]-u2)/d[nb] }' "$1" "$2"
}

# load -> "set_rps get_rps cpu_pct" (proxy CPU over the load)
LOAD_N=0
load() {
  local c0 t0 c1 t1 out
  c0=$(cpu_ticks "$PROXY_PID"); t0=$(now_s)
  out=$("$RB" -h $HOST -p "$PROXY_PORT" -c 50 -P 1 -n "$LOAD_N" -r 100000 --csv -t set,get 2>/dev/null | tr -d '"')
  c1=$(cpu_ticks "$PROXY_PID"); t1=$(now_s)
  echo "$(awk -F, '$1=="SET"{print $2}' <<<"$out") $(awk -F, '$1=="GET"{print $2}' <<<"$out") $(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(e-s)}')"
}

# wait_reaped target_total: until cleanups_total reaches target (or 60 s past the last deadline)
wait_reaped() {
  local target=$1 limit=$(( $(date +%s) + 75 )) got
  while :; do
    metrics >"$WORK/m.txt"; got=$(metric_sum "$WORK/m.txt" sessionproxy_reaper_cleanups_total)
    [ "$got" -ge "$target" ] && return 0
    [ "$(date +%s)" -ge "$limit" ] && { log "reaping incomplete: $got of $target cleanups"; return 1; }
    sleep 0.2
  done
}

# write_batch tag: write the sessions through the proxy; deadlines 1..10 s after the expected end.
# Sets WRITE_END (s) and LAST_DEADLINE (s).
WRITE_SECS=5
write_batch() {
  local t0 start_ms t1
  t0=$(now_s)
  start_ms=$(awk -v t="$t0" -v w="$WRITE_SECS" 'BEGIN{printf "%.0f", (t + w) * 1000}')
  gen_sessions "$WORK/sessions.resp" "$1" "$start_ms"
  "$RCLI" -h $HOST -p "$PROXY_PORT" --pipe <"$WORK/sessions.resp" >"$WORK/pipe.log" 2>&1 || die "redis-cli --pipe: $(tail -2 "$WORK/pipe.log")"
  grep -q 'errors: 0' "$WORK/pipe.log" || log "pipe: $(tail -1 "$WORK/pipe.log")"
  t1=$(now_s); WRITE_END=$t1
  LAST_DEADLINE=$(awk -v s="$start_ms" 'BEGIN{printf "%.3f", (s + 10000) / 1000}')
  if awk -v e="$t1" -v s="$start_ms" 'BEGIN{exit !(e*1000 > s + 1000)}'; then
    log "warning: the write took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s, past the first deadlines (raise WRITE_SECS)"
  fi
  log "batch $1: $SESSIONS sessions written in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s"
}

echo "mode,phase,set_rps,get_rps,proxy_cpu_pct,redis_cpu_pct,window_s,path,cleanups,lag_p50_s,lag_p99_s,pct_over_1.28s,pct_over_2.56s" >"$OUT/reap.csv"
for mode in $MODES; do
  log "=== mode $mode"
  if [ "$mode" = sweep ]; then
    start_redis --notify-keyspace-events ""
    start_proxy SESSIONPROXY_REAPER_NOTIFICATIONS=false ${PROXY_ENV:-}
  else
    start_redis
    start_proxy SESSIONPROXY_REAPER_NOTIFICATIONS=true ${PROXY_ENV:-}
  fi
  sleep 1.5 # the reaper takes its lease and subscribes
  "$RB" -h $HOST -p "$REDIS_PORT" -c 50 -P 16 -n 1200000 -r 100000 -t set -q >/dev/null 2>&1
  # calibrate the load to ~LOAD_SECS for set+get together, and the write lead time
  LOAD_N=20000; read -r probe _ _ < <(load)
  LOAD_N=$(awk -v r="$probe" -v s="$LOAD_SECS" 'BEGIN{n=int(r*s/2); if(n<10000)n=10000; print n}')
  log "load: -t set,get -c 50 -P 1 -n $LOAD_N (probe $probe rps)"
  # the write lead: time a fifth of a batch (deadlines an hour out, so these never expire here)
  SESSIONS_SAVE=$SESSIONS; SESSIONS=$((SESSIONS / 5)); gen_sessions "$WORK/probe.resp" probe $(( ($(date +%s) + 3600) * 1000 )); SESSIONS=$SESSIONS_SAVE
  t0=$(now_s); "$RCLI" -h $HOST -p "$PROXY_PORT" --pipe <"$WORK/probe.resp" >/dev/null 2>&1; t1=$(now_s)
  WRITE_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN{w=(b-a)*5*1.5+1; printf "%.1f", w}')
  log "write lead: ${WRITE_SECS}s (probe: $((SESSIONS / 5)) sessions in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')s)"

  read -r bs1 bg1 bc1 < <(load)
  log "baseline load: set $bs1 get $bg1 rps, proxy cpu $bc1%"
  echo "$mode,load-before,$bs1,$bg1,$bc1,,,,,," >>"$OUT/reap.csv"

  # batch A: expiries under load
  metrics >"$OUT/$mode-A-before.metrics"; base=$(metric_sum "$OUT/$mode-A-before.metrics" sessionproxy_reaper_cleanups_total)
  write_batch A
  rc0=$(cpu_ticks "$REDIS_PID")
  read -r ls lg lc < <(load)
  wait_reaped $((base + SESSIONS))
  rc1=$(cpu_ticks "$REDIS_PID")
  metrics >"$OUT/$mode-A-after.metrics"
  log "load with expiries: set $ls get $lg rps, proxy cpu $lc%"
  echo "$mode,load-expiring,$ls,$lg,$lc,,,,,," >>"$OUT/reap.csv"
  for path in event sweep; do
    read -r n p50 p99 o1 o2 < <(lag_quantiles "$OUT/$mode-A-before.metrics" "$OUT/$mode-A-after.metrics" $path)
    echo "$mode,A-under-load,,,,,,$path,$n,$p50,$p99,$o1,$o2" >>"$OUT/reap.csv"
  done

  # batch B: expiries alone; CPU from write end until the last cleanup
  sleep 1
  metrics >"$OUT/$mode-B-before.metrics"; base=$(metric_sum "$OUT/$mode-B-before.metrics" sessionproxy_reaper_cleanups_total)
  write_batch B
  c0=$(cpu_ticks "$PROXY_PID"); rc0=$(cpu_ticks "$REDIS_PID"); t0=$(now_s)
  if [ -n "${PROFILE:-}" ]; then
    curl -s -o "$OUT/$mode-B-cpu.pprof" "http://$HOST:$ADMIN_PORT/debug/pprof/profile?seconds=10" &
    PROF_PID=$!
  fi
  wait_reaped $((base + SESSIONS))
  c1=$(cpu_ticks "$PROXY_PID"); rc1=$(cpu_ticks "$REDIS_PID"); t1=$(now_s)
  metrics >"$OUT/$mode-B-after.metrics"
  [ -n "${PROFILE:-}" ] && { wait "$PROF_PID"; cp "$PROXY_BIN" "$OUT/sessionproxy.bin"; }
  win=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  pc=$(awk -v a="$c0" -v b="$c1" -v w="$win" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", 100*(b-a)/hz/w}')
  rcpu=$(awk -v a="$rc0" -v b="$rc1" -v w="$win" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", 100*(b-a)/hz/w}')
  log "expiries alone: proxy cpu $pc%, redis cpu $rcpu% over ${win}s"
  for path in event sweep; do
    read -r n p50 p99 o1 o2 < <(lag_quantiles "$OUT/$mode-B-before.metrics" "$OUT/$mode-B-after.metrics" $path)
    echo "$mode,B-idle,,,$pc,$rcpu,$win,$path,$n,$p50,$p99,$o1,$o2" >>"$OUT/reap.csv"
  done

  read -r bs2 bg2 bc2 < <(load)
  log "baseline load (after): set $bs2 get $bg2 rps, proxy cpu $bc2%"
  echo "$mode,load-after,$bs2,$bg2,$bc2,,,,,," >>"$OUT/reap.csv"
  stop_pid "$PROXY_PID"; stop_pid "$REDIS_PID"
done

# report
awk -F, 'NR>1{
    if($2=="load-before"||$2=="load-after"){bs[$1]+=$3/2; bg[$1]+=$4/2; bc[$1]+=$5/2}
    if($2=="load-expiring"){ls[$1]=$3; lg[$1]=$4; lc[$1]=$5}
    if($2=="A-under-load"||$2=="B-idle"){ key=$1","$2; if(!(key in o)){o[key]=++n; keys[n]=key}
      lag[key]=lag[key] sprintf("  %-5s n=%-6d p50=%ss p99=%ss >1.28s:%s%%", $8, $9, $10, $11, $12) }
    if($2=="B-idle"){pc[$1]=$5; rc[$1]=$6; w[$1]=$7}
    if(!($1 in mo)){mo[$1]=++nm; modes[nm]=$1} }
  END{
    for(i=1;i<=nm;i++){m=modes[i]
      printf "mode %s\n", m
      printf "  load alone (mean of before/after): set %.0f get %.0f rps, proxy cpu %.1f%%\n", bs[m], bg[m], bc[m]
      printf "  load with expiries:                set %.0f get %.0f rps (x%.2f / x%.2f), proxy cpu %.1f%%\n", ls[m], lg[m], ls[m]/bs[m], lg[m]/bg[m], lc[m]
      printf "  expiries alone: proxy cpu %s%% of a core, redis-server cpu %s%%, over %ss\n", pc[m], rc[m], w[m]
      for(j=1;j<=n;j++){split(keys[j],kk,","); if(kk[1]==m) printf "  lag %-13s%s\n", kk[2], lag[keys[j]]}
    }
    print "targets: p99 lag < 1 s with notifications (events), < 2 s sweep-only; reaper cpu < 25% of a core"}' \
  "$OUT/reap.csv" | tee "$OUT/reap.txt"
{ echo; cat "$OUT/reap.txt"; } >>"$OUT/summary.txt"
log "done: $OUT/summary.txt"
