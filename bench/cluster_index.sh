#!/usr/bin/env bash
# cluster_index.sh - the session index on a Redis Cluster (index.cluster: true) through the proxy,
# in front of a 3-primary, 3-replica cluster:
#   1. session writes against plain HSET through the same proxy, alternating rounds, same-round
#      ratios: re-save (HSET session:s<r> userid 7, the owner stays), owner change
#      (HSET session:o<r> userid <r>), plain (HSET plain:<r> userid 7);
#   2. write-to-index convergence p50/p99 (bench/clusterindex -mode converge), idle and under
#      owner-change load;
#   3. reap lag p50/p99 and leaks for 100,000 sessions due within 10 s (-mode reap).
#   bench/cluster_index.sh            # ROUNDS=3 N=100000 C=50 PIPES="1 16"
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}; N=${N:-100000}; C=${C:-50}; PIPES=${PIPES:-"1 16"}; REAP_N=${REAP_N:-100000}
log "expected duration: about $(( ROUNDS * $(echo $PIPES | wc -w) * 3 * 3 + 70 )) s"
OUT=$(results_dir clusterindex)

start_cluster
build_proxy
(cd "$REPO" && go build -o "$WORK/clusterindex" ./bench/clusterindex) || die "go build clusterindex failed"
REDIS_PORT=${NODES[0]}
start_proxy SESSIONPROXY_UPSTREAM_MODE=cluster SESSIONPROXY_UPSTREAM_ADDRS="$HOST:${NODES[0]},$HOST:${NODES[1]}" \
  SESSIONPROXY_INDEX_CLUSTER=true
{ machine_info; echo "cluster: 3 primaries + 3 replicas on ${NODES[*]}; proxy on $PROXY_PORT (cluster mode, index.cluster: true)"; } >"$OUT/summary.txt"

# Re-saves and owner changes on keys of their own: an owner-change run must not turn the next
# re-save run into owner changes.
declare -A CMD=(
  [resave]="hset session:s__rand_int__ userid 7"
  [owner]="hset session:o__rand_int__ userid __rand_int__"
  [plain]="hset plain:__rand_int__ userid 7"
)
log "warm-up: every session exists once"
rb_rps "$PROXY_PORT" $((3 * N)) "$C" 16 ${CMD[resave]} >/dev/null
: >"$OUT/raw.csv"
for r in $(seq "$ROUNDS"); do
  for pp in $PIPES; do
    for t in plain resave owner; do
      res=$(rb_rps "$PROXY_PORT" "$N" "$C" "$pp" ${CMD[$t]})
      echo "$r,$pp,$t,${res% *},${res#* }" >>"$OUT/raw.csv"
      log "round $r -P $pp $t: ${res% *} rps, p50 ${res#* } ms"
    done
  done
done

log "convergence, idle"
idle=$("$WORK/clusterindex" -mode converge -proxy "$HOST:$PROXY_PORT" -cluster "$HOST:${NODES[0]}" -n 2000)
log "convergence, under owner-change load (-c $C -P 1)"
"$RB" -h $HOST -p "$PROXY_PORT" -c "$C" -P 1 -n 5000000 -r "${KEYSPACE:-100000}" -q ${CMD[owner]} >/dev/null 2>&1 &
load=$!; PIDS+=("$load")
sleep 1
busy=$("$WORK/clusterindex" -mode converge -proxy "$HOST:$PROXY_PORT" -cluster "$HOST:${NODES[0]}" -n 2000)
stop_pid "$load"

log "reap: $REAP_N sessions due within 10 s"
reap=$("$WORK/clusterindex" -mode reap -proxy "$HOST:$PROXY_PORT" -cluster "$HOST:${NODES[0]}" -n "$REAP_N" \
  -users 20000 -within 10s -metrics "$HOST:$METRICS_PORT")

{
  echo
  echo "rps through the proxy, median of $ROUNDS rounds (session write / plain HSET, same round: median, min-max):"
  for pp in $PIPES; do for t in resave owner; do
    rs=$(awk -F, -v p="$pp" -v t="$t" '$2==p && $3==t {print $1, $4}' "$OUT/raw.csv" | while read -r rr v; do
      pl=$(awk -F, -v p="$pp" -v r="$rr" '$1==r && $2==p && $3=="plain" {print $4}' "$OUT/raw.csv"); echo "$v $pl"; done |
      awk '$2>0 {print $1/$2}')
    printf "  -P %-3s %-7s %s rps (plain %s): ratio %s (%s-%s)\n" "$pp" "$t" \
      "$(awk -F, -v p="$pp" -v t="$t" '$2==p && $3==t {print $4}' "$OUT/raw.csv" | median)" \
      "$(awk -F, -v p="$pp" '$2==p && $3=="plain" {print $4}' "$OUT/raw.csv" | median)" \
      "$(echo "$rs" | median)" "$(echo "$rs" | sort -g | head -1)" "$(echo "$rs" | sort -g | tail -1)"
  done; done
  echo "write-to-index convergence, idle: $idle"
  echo "write-to-index convergence, under owner-change load: $busy"
  echo "$reap"
  echo "proxy metrics:"
  metrics | grep -E '^sessionproxy_(index_cluster_changes_total|reaper_cleanups_total|reaper_cluster_scripts_total|index_unindexed_writes_total)' | sed 's/^/  /'
} | tee -a "$OUT/summary.txt"
log "results: $OUT"
