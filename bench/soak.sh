#!/usr/bin/env bash
# soak.sh - a bounded soak (issue 14): a private Redis and proxy, then bench/soak's 200
# connections of mixed traffic (session writes with 1-5 s TTLs, in MULTI too, reads, DELs,
# SESSIONS.LIST/COUNT, plain keys, PUBLISH) for DURATION; at the end zero index drift, proxy RSS
# and goroutines flat (sampled every 30 s from /metrics), and no client error. Not part of CI.
#
# Env: DURATION (10m) CONNS (200) PAUSE (10ms between one connection's operations) PROCS
# Output: bench/results/<timestamp>-soak/soak.txt (the exit status says whether it held)
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10m}; CONNS=${CONNS:-200}; PAUSE=${PAUSE:-10ms}
OUT=$(results_dir soak)
log "expected duration: $DURATION + ~30 s; results in $OUT"
build_proxy
(cd "$REPO" && go build -o "$WORK/soak" ./bench/soak) || die "go build soak failed"
start_redis --maxclients 10000
start_proxy
{ machine_info; echo "duration $DURATION, $CONNS connections, pause $PAUSE"; } | tee "$OUT/soak.txt" >&2
"$WORK/soak" -addr "$HOST:$PROXY_PORT" -metrics "$HOST:$METRICS_PORT" -conns "$CONNS" -duration "$DURATION" \
  -pause "$PAUSE" 2>&1 | tee -a "$OUT/soak.txt"
status=${PIPESTATUS[0]}
grep -c "level=ERROR" "$WORK/proxy.log" | xargs -I{} echo "proxy ERROR log lines: {}" | tee -a "$OUT/soak.txt"
exit "$status"
