# lib.sh - shared by bench/run.sh, bench/session.sh and bench/reap.sh (source it, do not run it).
#
# Starts a private redis-server, sessionproxy and (optionally) nutcracker on free loopback ports
# in a temp dir and tears all of them down on exit. Every process is started by this shell and
# stopped by its own pid; nothing else on the machine is touched.
set -u

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
HOST=127.0.0.1
RB=${REDIS_BENCHMARK:-redis-benchmark}
RCLI=${REDIS_CLI:-redis-cli}
PROCS=${PROCS:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/spbench.XXXXXX")
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() {
  log "error: $*"
  local f; for f in "$WORK"/proxy.log "$WORK"/nutcracker.log; do [ -s "$f" ] && { log "--- $f"; tail -5 "$f" >&2; }; done
  exit 1
}

# free_port prints a loopback TCP port no socket uses (and that this script has not handed out).
# It picks below the kernel's ephemeral range, so a client connection cannot take it between
# this check and the listener's bind (that happened: "bind: address already in use").
free_port() {
  # Called as $(free_port): a subshell, which may start from the same RANDOM state as the last
  # call, so the ports already given are kept in a file, not a variable.
  local p lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$lo" -gt 12000 ] || lo=32768
  for _ in $(seq 200); do
    p=$(( (RANDOM << 15 | RANDOM) % (lo - 10000) + 10000 ))
    grep -qx "$p" "$WORK/ports" 2>/dev/null && continue
    if ! ss -Htan "sport = :$p" 2>/dev/null | grep -q .; then echo "$p" >>"$WORK/ports"; echo "$p"; return; fi
  done
  die "no free port"
}

wait_port() { # port [seconds]
  local end=$(( $(date +%s) + ${2:-30} ))
  while [ "$(date +%s)" -lt "$end" ]; do
    "$RCLI" -h $HOST -p "$1" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  die "nothing answers PING on port $1"
}

build_proxy() {
  PROXY_BIN=$WORK/sessionproxy
  log "go build ./cmd/sessionproxy"
  (cd "$REPO" && go build -o "$PROXY_BIN" ./cmd/sessionproxy) || die "build failed"
}

# start_redis [extra redis-server args...] -> REDIS_PORT, REDIS_PID
start_redis() {
  REDIS_PORT=$(free_port)
  mkdir -p "$WORK/redis-$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind $HOST --save '' --appendonly no \
    --dir "$WORK/redis-$REDIS_PORT" --logfile redis.log "$@" &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  wait_port "$REDIS_PORT"
}

# start_proxy [VAR=value env...] -> PROXY_PORT, METRICS_PORT, ADMIN_PORT (/debug/pprof), PROXY_PID
# (needs REDIS_PORT)
start_proxy() {
  PROXY_PORT=$(free_port); METRICS_PORT=$(free_port); ADMIN_PORT=$(free_port)
  env SESSIONPROXY_PROCS="$PROCS" SESSIONPROXY_LOG_LEVEL=warn SESSIONPROXY_ADMIN="$HOST:$ADMIN_PORT" "$@" \
    "$PROXY_BIN" -listen "$HOST:$PROXY_PORT" -upstream "$HOST:$REDIS_PORT" -metrics "$HOST:$METRICS_PORT" \
    2>>"$WORK/proxy.log" &
  PROXY_PID=$!; PIDS+=("$PROXY_PID")
  wait_port "$PROXY_PORT"
}

# start_proxy_b -> B_PORT, B_PID: a second sessionproxy, the binary $PROXY_B (for an A/B of two
# builds), in front of the same redis; PROXY_PORT, PROXY_PID, METRICS_PORT keep naming the first.
start_proxy_b() {
  local port=$PROXY_PORT pid=$PROXY_PID bin=$PROXY_BIN metrics=$METRICS_PORT admin=$ADMIN_PORT
  PROXY_BIN=$PROXY_B start_proxy
  B_PORT=$PROXY_PORT B_PID=$PROXY_PID
  PROXY_PORT=$port PROXY_PID=$pid PROXY_BIN=$bin METRICS_PORT=$metrics ADMIN_PORT=$admin
}

# start_minrelay -> MINRELAY_PORT, MINRELAY_PID: bench/minrelay (built here) in front of the same redis.
start_minrelay() {
  local bin=$WORK/minrelay
  (cd "$REPO" && go build -o "$bin" ./bench/minrelay) || die "go build minrelay failed"
  MINRELAY_PORT=$(free_port)
  "$bin" -listen "$HOST:$MINRELAY_PORT" -upstream "$HOST:$REDIS_PORT" 2>>"$WORK/minrelay.log" &
  MINRELAY_PID=$!; PIDS+=("$MINRELAY_PID")
  wait_port "$MINRELAY_PORT"
}

# start_gorelay -> GORELAY_PORT, GORELAY_PID: bench/minrelay -mode goroutines (the proxy's design
# and nothing else, GOMAXPROCS 1) in front of the same redis, with the runtime setting the proxy
# gives itself (the monitor thread kept awake: cmd/sessionproxy/sysmon_linux.go).
start_gorelay() {
  local bin=$WORK/minrelay
  [ -x "$bin" ] || (cd "$REPO" && go build -o "$bin" ./bench/minrelay) || die "go build minrelay failed"
  GORELAY_PORT=$(free_port)
  GODEBUG=schedtrace=2147483647 "$bin" -mode goroutines -procs 1 -listen "$HOST:$GORELAY_PORT" -upstream "$HOST:$REDIS_PORT" 2>>"$WORK/gorelay.log" &
  GORELAY_PID=$!; PIDS+=("$GORELAY_PID")
  wait_port "$GORELAY_PORT"
}

# start_cluster -> NODES (ports, primaries first): a 3-primary, 3-replica Redis Cluster, each
# node's port and its bus port (+10000) free.
start_cluster() {
  NODES=()
  local i p addrs=() ok
  for i in $(seq 6); do
    for _ in $(seq 50); do
      p=$(free_port)
      [ $((p + 10000)) -lt 65536 ] && ! ss -Htan "sport = :$((p + 10000))" | grep -q . && break
    done
    mkdir -p "$WORK/node-$p"
    redis-server --port "$p" --bind $HOST --save '' --appendonly no --dir "$WORK/node-$p" --logfile redis.log \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 --repl-diskless-sync-delay 0 &
    PIDS+=("$!"); NODES+=("$p")
  done
  for p in "${NODES[@]}"; do wait_port "$p"; addrs+=("$HOST:$p"); done
  "$RCLI" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$WORK/create.log" 2>&1 || die "cluster create failed"
  for _ in $(seq 200); do
    ok=1; for p in "${NODES[@]}"; do "$RCLI" -p "$p" cluster info | grep -q cluster_state:ok || ok=0; done
    [ $ok = 1 ] && break; sleep 0.1
  done
  [ $ok = 1 ] || die "cluster not ok"
}

stop_pid() { # pid: stop one process this script started
  kill "$1" 2>/dev/null; wait "$1" 2>/dev/null
  local keep=() p; for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done; PIDS=("${keep[@]}")
}

# start_twemproxy -> TWEM_PORT, TWEM_PID: one pool, redis: true, server_connections 1, same redis.
start_twemproxy() {
  command -v nutcracker >/dev/null || { log "nutcracker not installed: no twemproxy column"; TWEM_PORT=""; return; }
  TWEM_PORT=$(free_port); local stats; stats=$(free_port)
  cat >"$WORK/nutcracker.yml" <<YML
bench:
  listen: $HOST:$TWEM_PORT
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: 1
  auto_eject_hosts: false
  timeout: 5000
  servers:
    - $HOST:$REDIS_PORT:1
YML
  nutcracker -c "$WORK/nutcracker.yml" -s "$stats" -a $HOST -o "$WORK/nutcracker.log" &
  TWEM_PID=$!; PIDS+=("$TWEM_PID")
  wait_port "$TWEM_PORT"
}

# start_predixy: predixy (one worker thread, one standalone pool on the same redis) as a peer,
# the fastest one measured on this host (issue 16). Its binary is $PREDIXY; else it is built with
# make from $PREDIXY_SRC; else its source is cloned from $PREDIXY_GIT (its public repository)
# into bench/.cache/predixy and built there (PREDIXY_MAKE: make's arguments, MT=false). When
# none of that works (no network, no compiler), it says why and the run goes on without the
# column (PREDIXY_PORT empty).
start_predixy() {
  PREDIXY_PORT=""
  local bin=${PREDIXY:-} src=${PREDIXY_SRC:-$REPO/bench/.cache/predixy}
  local git=${PREDIXY_GIT:-https://github.com/joyieldInc/predixy.git}
  if [ -z "$bin" ]; then
    if [ ! -x "$src/src/predixy" ]; then
      if [ ! -f "$src/Makefile" ]; then
        if [ -n "${PREDIXY_SRC:-}" ]; then
          log "predixy: no source tree at $PREDIXY_SRC: no predixy column"; return
        fi
        log "predixy: cloning its source from $git"
        rm -rf "$src"; mkdir -p "$(dirname "$src")"
        if ! GIT_TERMINAL_PROMPT=0 timeout 60 git clone -q --depth 1 "$git" "$src" >"$WORK/predixy-build.log" 2>&1; then
          log "predixy: its source cannot be had here ($(tail -1 "$WORK/predixy-build.log")): no predixy column (set PREDIXY to a binary, PREDIXY_SRC to a source tree, or PREDIXY=none)"
          rm -rf "$src"; return
        fi
      fi
      # MT=false: predixy's single-thread build, its fastest with one worker thread (0.92 vs
      # 1.18 us of CPU per request at -c 50 -P 16 GET on this host, bench/README.md).
      log "predixy: building $src (make ${PREDIXY_MAKE-MT=false})"
      if ! timeout 900 make -C "$src" -j2 ${PREDIXY_MAKE-MT=false} >>"$WORK/predixy-build.log" 2>&1 || [ ! -x "$src/src/predixy" ]; then
        log "predixy: build failed ($(tail -1 "$WORK/predixy-build.log")): no predixy column"; return
      fi
    fi
    bin=$src/src/predixy
  fi
  local port; port=$(free_port)
  cat >"$WORK/predixy.conf" <<CONF
Name sessionproxy-bench
Bind $HOST:$port
WorkerThreads ${PREDIXY_THREADS:-1}
ClientTimeout 0
LogVerbSample 0
LogDebugSample 0
LogInfoSample 0
LogNoticeSample 0
LogWarnSample 1
LogErrorSample 1
StandaloneServerPool {
    Hash crc16
    Distribution modula
    RefreshMethod fixed
    Group shard001 {
        + $HOST:$REDIS_PORT
    }
}
CONF
  "$bin" "$WORK/predixy.conf" >"$WORK/predixy.log" 2>&1 &
  PREDIXY_PID=$!; PIDS+=("$PREDIXY_PID")
  local end=$(( $(date +%s) + 10 ))
  while [ "$(date +%s)" -lt "$end" ] && kill -0 "$PREDIXY_PID" 2>/dev/null; do
    if "$RCLI" -h $HOST -p "$port" ping 2>/dev/null | grep -q PONG; then PREDIXY_PORT=$port; return; fi
    sleep 0.05
  done
  log "predixy: $bin does not answer PING ($(tail -1 "$WORK/predixy.log")): no predixy column"
  stop_pid "$PREDIXY_PID"
}

# metrics: the proxy's /metrics text
metrics() { curl -s "http://$HOST:$METRICS_PORT/metrics"; }

# cpu_ticks pid: utime+stime in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)
now_s() { date +%s.%N; }

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "nan"} else if(NR%2){print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# rb_rps port n clients pipeline args... : one redis-benchmark run -> "rps p50_ms"
rb_rps() {
  local port=$1 n=$2 c=$3 pp=$4; shift 4
  "$RB" -h $HOST -p "$port" -c "$c" -P "$pp" -n "$n" -r "${KEYSPACE:-100000}" --csv "$@" 2>/dev/null |
    grep -v '^"test"' | tail -1 | tr -d '"' | awk -F, '{if (NF>=5) printf "%s %s\n", $2, $5; else print "0 0"}'
}

results_dir() { # name -> prints bench/results/<timestamp>-name (created)
  local d="$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-$1"
  mkdir -p "$d"; echo "$d"
}

machine_info() {
  echo "date: $(date -Is)"
  echo "host: $(hostname)  cpus: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "redis: $(redis-server --version | grep -o 'v=[0-9.]*')  go: $(go version | awk '{print $3}')"
  echo "commit: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo none)$(cd "$REPO" && git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "proxy procs (GOMAXPROCS): $PROCS"
}
