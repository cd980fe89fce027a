#!/usr/bin/env bash
# run.sh - peer comparison: redis-server direct vs sessionproxy vs twemproxy (nutcracker) vs predixy.
#
# Builds the proxy, starts a private redis-server (--save '' --appendonly no), the proxy and
# nutcracker (one pool, redis: true, server_connections 1, same redis) on free loopback ports,
# then runs the shared A/B tool if it is there (../shared/tools/peerbench.sh next to the repo, or
# $PEERBENCH): `--ab DIRECT PROXY:proxy TWEMPROXY:twemproxy` and `--lat`. Without it, a built-in
# loop does the same thing in small: rounds that alternate direct/proxy/twemproxy, ratio of
# medians. Everything is stopped on exit.
#
# Env: ROUNDS (3) SECS (2.5 per measurement) TESTS ("SET GET INCR LPUSH HSET MSET MGET")
#      MATRIX ("50/1 50/16") PEERBENCH (path) SKIP_LAT=1
#      PROCS (proxy GOMAXPROCS, 1; a list such as "1 2" starts one proxy per value, labelled
#      proxy-p1, proxy-p2, all measured in the same alternating rounds)
#      PROXY_B (path of another sessionproxy binary, e.g. an older build: started too, labelled
#      proxy-b and measured in the same rounds; an A/B of two versions)
#      PREDIXY (predixy's binary; PREDIXY_SRC a source tree to build; neither: cloned from
#      PREDIXY_GIT and built in bench/.cache; "none" leaves the column out; when its source
#      cannot be had, the run says so and goes on without it)
#      CEILING (1: also bench/minrelay, the least a relay can do, as the "minrelay" column: the
#      ceiling of any proxy hop on this host; 0 leaves it out)
# Output: bench/results/<timestamp>-peer/{peer.csv,peer.txt,lat.csv,lat.txt,summary.txt}
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-3}; SECS=${SECS:-2.5}
TESTS=${TESTS:-"SET GET INCR LPUSH HSET MSET MGET"}
MATRIX=${MATRIX:-"50/1 50/16"}
export ROUNDS SECS TESTS MATRIX

PB=${PEERBENCH:-$REPO/../shared/tools/peerbench.sh}
[ -f "$PB" ] || PB=""

OUT=$(results_dir peer)
CEILING=${CEILING:-1}
ntests=$(wc -w <<<"$TESTS"); ncells=$(wc -w <<<"$MATRIX"); nb=0; [ -n "${PROXY_B:-}" ] && nb=1
np=1; [ "${PREDIXY:-}" = none ] && np=0
ntargets=$((2 + CEILING + nb + np + $(wc -w <<<"$PROCS")))
est=$(awk -v t="$ntests" -v c="$ncells" -v r="$ROUNDS" -v s="$SECS" -v n="$ntargets" 'BEGIN{printf "%d", t*c*r*n*s*1.2 + c*n*4*s + 30 + (ENVIRON["SKIP_LAT"]==""? r*n*s + 15 : 0)}')
log "expected duration: ~${est}s (+ build); results in $OUT"

build_proxy
start_redis
TARGETS=("$REDIS_PORT")
for p in $PROCS; do
  label=proxy; [ "$(wc -w <<<"$PROCS")" -gt 1 ] && label=proxy-p$p
  start_proxy SESSIONPROXY_PROCS="$p"
  TARGETS+=("$PROXY_PORT:$label")
done
if [ -n "${PROXY_B:-}" ]; then
  start_proxy_b
  TARGETS+=("$B_PORT:proxy-b")
fi
start_twemproxy
[ -n "$TWEM_PORT" ] && TARGETS+=("$TWEM_PORT:twemproxy")
if [ "${PREDIXY:-}" != none ]; then
  start_predixy
  [ -n "$PREDIXY_PORT" ] && TARGETS+=("$PREDIXY_PORT:predixy")
fi
if [ "$CEILING" = 1 ]; then
  start_minrelay
  TARGETS+=("$MINRELAY_PORT:minrelay")
fi
{ machine_info; echo "targets: ${TARGETS[*]}"; } | tee "$OUT/summary.txt" >&2

if [ -n "$PB" ]; then
  log "peerbench: $PB --ab ${TARGETS[*]}"
  bash "$PB" -o "$OUT/peer.csv" --ab "${TARGETS[@]}" | tee "$OUT/peer.txt"
  if [ -z "${SKIP_LAT:-}" ]; then
    log "peerbench: $PB --lat ${TARGETS[*]}"
    bash "$PB" -o "$OUT/lat.csv" --lat "${TARGETS[@]}" | tee "$OUT/lat.txt"
  fi
else
  # Built-in fallback: same idea, fewer frills. n per cell is calibrated once on direct Redis
  # (GET) so each measurement takes about SECS there; every target gets the same n.
  log "no peerbench.sh: built-in alternating loop"
  echo "label,port,test,clients,pipeline,round,n,rps,p50_ms" >"$OUT/peer.csv"
  "$RB" -h $HOST -p "$REDIS_PORT" -c 50 -P 16 -n 1200000 -r 100000 -t set -q >/dev/null 2>&1
  labels=(direct); for t in "${TARGETS[@]:1}"; do labels+=("${t#*:}"); done
  for cp in $MATRIX; do
    c=${cp%/*}; pp=${cp#*/}
    read -r probe _ < <(rb_rps "$REDIS_PORT" $((pp > 1 ? 100000 : 20000)) "$c" "$pp" -t get)
    n=$(awk -v r="$probe" -v s="$SECS" 'BEGIN{n=int(r*s); if(n<2000)n=2000; print n}')
    for t in $TESTS; do
      case $t in
        MGET) targs=(MGET); for _ in $(seq 10); do targs+=("key:__rand_int__"); done ;;
        *) targs=(-t "$(tr 'A-Z' 'a-z' <<<"$t")") ;;
      esac
      tn=$n; case $t in MSET|MGET) tn=$(( pp > 1 ? n / 5 : n * 4 / 5 )) ;; esac
      for r in $(seq "$ROUNDS"); do
        idx=("${!TARGETS[@]}"); [ $((r % 2)) = 0 ] && idx=($(printf '%s\n' "${idx[@]}" | tac))
        for i in "${idx[@]}"; do
          port=${TARGETS[$i]%%:*}
          [ "$t" = LPUSH ] && "$RCLI" -h $HOST -p "$REDIS_PORT" del mylist >/dev/null
          read -r rps p50 < <(rb_rps "$port" "$tn" "$c" "$pp" "${targs[@]}")
          echo "${labels[$i]},$port,$t,$c,$pp,$r,$tn,$rps,$p50" >>"$OUT/peer.csv"
        done
      done
      echo -n . >&2
    done
  done
  echo >&2
  awk -F, -v labs="${labels[*]}" 'NR>1{cell=$3" "$4"/"$5; if(!(cell in seen)){seen[cell]=1; cells[++nc]=cell}; rps[$1,cell,$6]=$8; if($6>R)R=$6}
    function med(s,  n,v,i,j,t){n=split(s,v," "); for(i=1;i<=n;i++)for(j=i+1;j<=n;j++)if(v[j]+0<v[i]+0){t=v[i];v[i]=v[j];v[j]=t}
      return (n%2)?v[(n+1)/2]:(v[n/2]+v[n/2+1])/2}
    END{nl=split(labs, L, " "); printf "%-12s %10s", "cell", "direct_rps"; for(l=2;l<=nl;l++) printf " %16s", L[l]" ratio"; printf "\n"
      for(i=1;i<=nc;i++){c=cells[i]; d=""; for(r=1;r<=R;r++) d=d" "rps["direct",c,r]
        printf "%-12s %10.0f", c, med(d)
        for(l=2;l<=nl;l++){ s=""; for(r=1;r<=R;r++) if(rps["direct",c,r]>0) s=s" "rps[L[l],c,r]/rps["direct",c,r]; printf " %16.2f", med(s) }
        printf "\n"}}' "$OUT/peer.csv" | tee "$OUT/peer.txt"
  if [ -z "${SKIP_LAT:-}" ]; then
    echo "label,round,rps,p50_ms,avg_ms" >"$OUT/lat.csv"
    for r in $(seq "$ROUNDS"); do
      idx=("${!TARGETS[@]}"); [ $((r % 2)) = 0 ] && idx=($(printf '%s\n' "${idx[@]}" | tac))
      for i in "${idx[@]}"; do
        line=$("$RB" -h $HOST -p "${TARGETS[$i]%%:*}" -c 1 -n 20000 -r 100000 --csv -t get 2>/dev/null | tail -1 | tr -d '"')
        echo "${labels[$i]},$r,$(cut -d, -f2 <<<"$line"),$(cut -d, -f5 <<<"$line"),$(cut -d, -f3 <<<"$line")" >>"$OUT/lat.csv"
      done
    done
    d=$(awk -F, '$1=="direct"{print $4}' "$OUT/lat.csv" | median)
    for l in "${labels[@]}"; do
      p=$(awk -F, -v l="$l" '$1==l{print $4}' "$OUT/lat.csv" | median)
      awk -v l="$l" -v p="$p" -v d="$d" 'BEGIN{printf "%-12s p50_us=%.1f  added_p50_us=%.1f\n", l, p*1000, (p-d)*1000}'
    done | tee "$OUT/lat.txt"
  fi
fi
{ echo; cat "$OUT/peer.txt"; [ -f "$OUT/lat.txt" ] && { echo; cat "$OUT/lat.txt"; }; } >>"$OUT/summary.txt"
log "done: $OUT/summary.txt"
