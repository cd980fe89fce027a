#!/usr/bin/env bash
# session.sh - the session-write benchmark: what indexing a session write costs.
#
# At -c 50 -P 16 (CLIENTS/PIPELINE), per command (HSET, HMSET) and round, in alternating order:
#   direct      CMD plain:__rand_int__ userid 42        straight to Redis
#   proxy       CMD plain:__rand_int__ userid 42        through the proxy, not a session key
#   sess-stable CMD session:__rand_int__ userid 42      through the proxy: re-saving sessions
#                                                       whose owner stays the same
#   sess-owner  CMD session:__rand_int__ userid __rand_int__  owner changes on every write
#   lua-floor   straight to Redis, no proxy: EVALSHA of a minimal indexing script (HSET, owner-map
#               HGET, and on a change SREM/SADD/HSET), PIPELINE session writes per call at -P 1:
#               the fastest a per-write server-side script can be on this host (HSET only)
#   floor-proxy the same EVALSHA sent through the proxy (relayed as is): a proxy hop that does no
#               work of its own for the index (HSET only)
# and prints per command the median over rounds of the same-round ratios
#   session / direct plain  (target >= 0.5)   and   session / proxy plain  (target >= 0.7).
# Keys: -r KEYSPACE; both key sets are prefilled first (so "stable" re-saves existing sessions).
#
# Env: ROUNDS (5) SECS (2.5) CMDS ("HSET HMSET") CLIENTS (50) PIPELINE (16) KEYSPACE (100000) PROCS
# Output: bench/results/<timestamp>-session/{session.csv,session.txt}
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-5}; SECS=${SECS:-2.5}; CMDS=${CMDS:-"HSET HMSET"}
CLIENTS=${CLIENTS:-50}; PIPELINE=${PIPELINE:-16}; KEYSPACE=${KEYSPACE:-100000}
OUT=$(results_dir session)
est=$(awk -v c="$(wc -w <<<"$CMDS")" -v r="$ROUNDS" -v s="$SECS" 'BEGIN{printf "%d", c*r*4*s + 2*r*s + 40}')
log "expected duration: ~${est}s (+ build); results in $OUT"

build_proxy
start_redis
start_proxy
{ machine_info; echo "redis=$REDIS_PORT proxy=$PROXY_PORT c=$CLIENTS P=$PIPELINE keyspace=$KEYSPACE"; } | tee "$OUT/summary.txt" >&2

LABELS=(direct proxy sess-stable sess-owner lua-floor floor-proxy)
target_port() { case $1 in direct|lua-floor) echo "$REDIS_PORT" ;; *) echo "$PROXY_PORT" ;; esac; }
is_floor() { [ "$1" = lua-floor ] || [ "$1" = floor-proxy ]; }
target_args() { # label cmd
  case $1 in
    direct|proxy) echo "$2 plain:__rand_int__ userid 42" ;;
    sess-stable) echo "$2 session:__rand_int__ userid 42" ;;
    sess-owner) echo "$2 session:__rand_int__ userid __rand_int__" ;;
    lua-floor|floor-proxy) echo "EVALSHA $FLOOR_SHA $PIPELINE $(printf 'session:__rand_int__ %.0s' $(seq "$PIPELINE")) 42 sessionproxy:owners" ;;
  esac
}
# The floor script: the same index (set layout, user:<uid> holds the sid) kept with the least
# Lua a correct re-save needs. No TTL or ledger work: re-saves with a stable TTL need none.
FLOOR='local uid, own = ARGV[1], ARGV[2]
for _, k in ipairs(KEYS) do
  redis.call("HSET", k, "userid", uid)
  local old = redis.call("HGET", own, k)
  if old ~= uid then
    local sid = string.sub(k, 9)
    if old then redis.call("SREM", "user:" .. old, sid) end
    redis.call("SADD", "user:" .. uid, sid)
    redis.call("HSET", own, k, uid)
  end
end
return #KEYS'
FLOOR_SHA=$("$RCLI" -h $HOST -p "$REDIS_PORT" script load "$FLOOR")

log "prefill: plain and session keys (stable owner 42)"
for l in direct sess-stable; do
  # shellcheck disable=SC2046
  "$RB" -h $HOST -p "$(target_port $l)" -c 50 -P 16 -n $((KEYSPACE * 12)) -r "$KEYSPACE" -q $(target_args $l HSET) >/dev/null 2>&1
done
"$RCLI" -h $HOST -p "$REDIS_PORT" dbsize | sed 's/^/keys after prefill: /' >&2

# n per measurement: calibrated so the proxy's session write runs ~SECS (each target gets the same n)
# shellcheck disable=SC2046
read -r probe _ < <(rb_rps "$PROXY_PORT" 100000 "$CLIENTS" "$PIPELINE" $(target_args sess-stable HSET))
N=$(awk -v r="$probe" -v s="$SECS" 'BEGIN{n=int(r*s); if(n<5000)n=5000; print n}')
log "n=$N per measurement (probe $probe rps)"

echo "cmd,label,round,n,rps,p50_ms" >"$OUT/session.csv"
for cmd in $CMDS; do
  for r in $(seq "$ROUNDS"); do
    idx=(0 1 2 3 4 5); [ $((r % 2)) = 0 ] && idx=(5 4 3 2 1 0)
    for i in "${idx[@]}"; do
      l=${LABELS[$i]}
      if is_floor "$l"; then
        [ "$cmd" = HSET ] || continue
        # one call = PIPELINE writes: the same writes in flight as CLIENTS x PIPELINE
        # shellcheck disable=SC2046
        read -r rps p50 < <(rb_rps "$(target_port "$l")" $((N / PIPELINE)) "$CLIENTS" 1 $(target_args "$l" "$cmd"))
        rps=$(awk -v r="$rps" -v p="$PIPELINE" 'BEGIN{printf "%.2f", r*p}')
      else
        # shellcheck disable=SC2046
        read -r rps p50 < <(rb_rps "$(target_port "$l")" "$N" "$CLIENTS" "$PIPELINE" $(target_args "$l" "$cmd"))
      fi
      echo "$cmd,$l,$r,$N,$rps,$p50" >>"$OUT/session.csv"
    done
    echo -n . >&2
  done
done
echo >&2

awk -F, 'NR>1{k=$1; if(!(k in seen)){seen[k]=1; cmds[++nc]=k}; rps[k,$2,$3]=$5; if($3>R)R=$3}
  function med(s,  n,v,i,j,t){n=split(s,v," "); for(i=1;i<=n;i++)for(j=i+1;j<=n;j++)if(v[j]+0<v[i]+0){t=v[i];v[i]=v[j];v[j]=t}
    return (n%2)?v[(n+1)/2]:(v[n/2]+v[n/2+1])/2}
  function mn(s,  n,v,i,m){n=split(s,v," "); m=v[1]; for(i=2;i<=n;i++) if(v[i]+0<m+0) m=v[i]; return m}
  function mx(s,  n,v,i,m){n=split(s,v," "); m=v[1]; for(i=2;i<=n;i++) if(v[i]+0>m+0) m=v[i]; return m}
  END{
    printf "%-6s %-12s %10s %20s %20s\n", "cmd", "target", "median_rps", "/direct [min-max]", "/proxy-plain [min-max]"
    for(ci=1;ci<=nc;ci++){ c=cmds[ci]
      split("direct proxy sess-stable sess-owner lua-floor floor-proxy", L, " ")
      for(li=1;li<=6;li++){ l=L[li]; s=""; a=""; b=""; if(rps[c,l,1]=="") continue
        for(r=1;r<=R;r++){ s=s" "rps[c,l,r]; if(rps[c,"direct",r]>0) a=a" "rps[c,l,r]/rps[c,"direct",r]; if(rps[c,"proxy",r]>0) b=b" "rps[c,l,r]/rps[c,"proxy",r] }
        printf "%-6s %-12s %10.0f %7.2f [%4.2f-%4.2f] %7.2f [%4.2f-%4.2f]\n", c, l, med(s), med(a), mn(a), mx(a), med(b), mn(b), mx(b) } } }' \
  "$OUT/session.csv" | tee "$OUT/session.txt"
echo "targets: sess-* /direct >= 0.5 and /proxy-plain >= 0.7 (floors: rps = writes/s)" | tee -a "$OUT/session.txt"
{ echo; cat "$OUT/session.txt"; } >>"$OUT/summary.txt"
log "done: $OUT/summary.txt"
