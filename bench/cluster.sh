#!/usr/bin/env bash
# cluster.sh - the proxy in cluster mode in front of a 3-primary, 3-replica Redis Cluster vs
# `redis-benchmark --cluster` straight to the cluster, alternating rounds, same-round ratios;
# then MGET of 10 keys in 10 slots through the proxy, against GET through it.
#   bench/cluster.sh                       # ROUNDS=3, TESTS="SET GET INCR HSET", MATRIX="50/1 50/16"
# env: ROUNDS N1 (requests per run at -P 1, 100000) N16 (at -P 16, 400000) TESTS MATRIX
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}; N1=${N1:-100000}; N16=${N16:-400000}
TESTS=${TESTS:-"SET GET INCR HSET"}; MATRIX=${MATRIX:-"50/1 50/16"}
log "expected duration: about $(( ROUNDS * $(echo $TESTS | wc -w) * $(echo $MATRIX | wc -w) * 2 * 3 / 2 + 40 )) s"
OUT=$(results_dir cluster)

start_cluster
build_proxy
REDIS_PORT=${NODES[0]}
start_proxy SESSIONPROXY_UPSTREAM_MODE=cluster SESSIONPROXY_UPSTREAM_ADDRS="$HOST:${NODES[0]},$HOST:${NODES[1]}"
{ machine_info; echo "cluster: 3 primaries + 3 replicas on ${NODES[*]}; proxy on $PROXY_PORT (cluster mode)"; } >"$OUT/summary.txt"

: >"$OUT/raw.csv"
for r in $(seq "$ROUNDS"); do
  for cell in $MATRIX; do
    c=${cell%/*}; pp=${cell#*/}; n=$N1; [ "$pp" -gt 1 ] && n=$N16
    for t in $TESTS; do
      lt=$(echo "$t" | tr A-Z a-z)
      d=$(rb_rps "${NODES[0]}" "$n" "$c" "$pp" --cluster -t "$lt")
      p=$(rb_rps "$PROXY_PORT" "$n" "$c" "$pp" -t "$lt")
      echo "$r,$cell,$t,${d% *},${p% *}" >>"$OUT/raw.csv"
      log "round $r $cell $t: direct --cluster ${d% *} rps, proxy ${p% *} rps"
    done
  done
done

# MGET of 10 keys, one per slot, spread over the three primaries; GET through the proxy alongside.
keys=(a b c d e f g h i j)
for k in "${keys[@]}"; do "$RCLI" -p "$PROXY_PORT" set "$k" v >/dev/null; done
: >"$OUT/mget.csv"
for r in $(seq "$ROUNDS"); do
  m=$(rb_rps "$PROXY_PORT" "$N1" 50 1 mget "${keys[@]}")
  g=$(rb_rps "$PROXY_PORT" "$N1" 50 1 get a)
  echo "$r,${m% *},${g% *}" >>"$OUT/mget.csv"
  log "round $r: MGET 10 keys ${m% *} rps, GET ${g% *} rps through the proxy"
done

{
  echo
  echo "proxy rps / redis-benchmark --cluster rps, median of $ROUNDS rounds (min-max):"
  for cell in $MATRIX; do for t in $TESTS; do
    rs=$(awk -F, -v c="$cell" -v t="$t" '$2==c && $3==t && $4>0 {print $5/$4}' "$OUT/raw.csv")
    printf "  %-6s %-5s %s (%s-%s)\n" "$cell" "$t" "$(echo "$rs" | median)" "$(echo "$rs" | sort -g | head -1)" "$(echo "$rs" | sort -g | tail -1)"
  done; done
  echo "MGET 10 keys in 10 slots through the proxy, rps (median): $(cut -d, -f2 "$OUT/mget.csv" | median); GET: $(cut -d, -f3 "$OUT/mget.csv" | median)"
} | tee -a "$OUT/summary.txt"
log "results: $OUT"
