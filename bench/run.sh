#!/usr/bin/env bash
# The gateway beside its peers (nginx auth_request, Caddy forward_auth, bare aiohttp), one harness
# run per gateway process count, everything on 127.0.0.1.
#
#   bench/run.sh                                   # full: workers 1 and 2, DURATION=10 REPS=3 (~18 min)
#   DURATION=5 REPS=1 bench/run.sh                 # quick check
#   WORKERS_LIST=1 VARIANTS=fast DURATION=5 REPS=1 bench/run.sh
#
# For each N in WORKERS_LIST it writes a config (workers: N, every feature on), starts
# `.venv/bin/hamrah-gateway --config ...`, waits until its admin /healthz answers and N processes
# listen, runs ../shared/bench/peers/run_all.sh with GATEWAY_URL/GATEWAY_NAME (which starts the
# upstream :18080 and auth API :18081 and measures the peers in the same run), snapshots /metrics,
# stops the gateway, and copies the harness report. Everything lands in
# bench/results/run-<timestamp>/ (git-ignored), with README.md holding machine info and the tables.
#
# Knobs (passed to the harness): DURATION REPS VARIANTS PEERS CONNS THREADS WARMUP
# Own knobs: WORKERS_LIST="1 2"  GW_PORT=18200  ADMIN_PORT=18201
#            GW_LOG=file (JSON access log to results/.../gateway-wN.log, gzipped after) | null (/dev/null)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
HARNESS="${HARNESS:-$ROOT/../shared/bench/peers/run_all.sh}"
[[ -x "$HARNESS" ]] || { echo "run.sh: harness not found at $HARNESS" >&2; exit 1; }

WORKERS_LIST="${WORKERS_LIST:-1 2}"
GW_PORT="${GW_PORT:-18200}"
ADMIN_PORT="${ADMIN_PORT:-18201}"
GW_LOG="${GW_LOG:-file}"
export DURATION="${DURATION:-10}" REPS="${REPS:-3}" VARIANTS="${VARIANTS:-fast slow}"
[[ -n "${PEERS:-}" ]] && export PEERS
# peer4 (bare aiohttp) runs on the gateway's own venv: same aiohttp 3.14.5 / uvloop 0.23.0 as the
# harness pins, so no second venv is installed.
export BENCH_VENV="${BENCH_VENV:-$ROOT/.venv}"
export PEER_BENCH_HOME="${PEER_BENCH_HOME:-/tmp/peer-bench}"

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$HERE/results/run-$STAMP"
mkdir -p "$OUT"
log() { echo "[$(date +%T)] run.sh: $*" | tee -a "$OUT/run.log" >&2; }
die() { log "ERROR: $*"; exit 1; }

port_busy() { ss -Hltn "sport = :$1" | grep -q .; }
for p in 18080 18081 "$GW_PORT" "$ADMIN_PORT"; do
  port_busy "$p" && die "port 127.0.0.1:$p is in use (another bench running?); not starting"
done

code_rev() {  # the gateway code a process starting now runs (others may be editing it)
  "$ROOT/.venv/bin/python" "$HERE/gwbench.py" revision
}

machine_info() {
  echo "- date: $(date -Is)"
  echo "- host: $(hostname), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "- kernel: $(uname -srm)"
  echo "- memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "- python: $("$ROOT/.venv/bin/python" -c 'import sys, aiohttp, uvloop; print(sys.version.split()[0], "aiohttp", aiohttp.__version__, "uvloop", uvloop.__version__)')"
  echo "- gateway code at start: $(code_rev) (each run below names the code its gateway started with)"
  echo "- load before start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

write_config() {  # N path: every feature on (path normalization, header hygiene, JSON access log, metrics)
  "$ROOT/.venv/bin/python" "$HERE/gwbench.py" config --workers "$1" --port "$GW_PORT" \
    --admin-port "$ADMIN_PORT" --upstream http://127.0.0.1:18080 \
    --validate-url http://127.0.0.1:18081/api/auth/sessions/validate >"$2"
}

GW_PID=""
stop_gateway() {
  [[ -n "$GW_PID" ]] || return 0
  if kill -0 "$GW_PID" 2>/dev/null; then
    local kids; kids="$(ps -o pid= --ppid "$GW_PID" 2>/dev/null | tr -s ' \n' ' ' || true)"
    kill -TERM "$GW_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$GW_PID" 2>/dev/null; then
      log "gateway pid $GW_PID did not stop in 20 s: KILL $GW_PID $kids"
      kill -KILL "$GW_PID" $kids 2>/dev/null || true
    fi
    wait "$GW_PID" 2>/dev/null || true
  fi
  GW_PID=""
}
trap stop_gateway EXIT
trap 'exit 130' INT TERM

listeners() { ss -Hltnp "sport = :$GW_PORT" | grep -o 'pid=[0-9]*' | sort -u | wc -l; }

start_gateway() {  # N config logfile
  local n="$1" cfg="$2" logf="$3" deadline
  "$ROOT/.venv/bin/hamrah-gateway" --config "$cfg" --check >>"$OUT/run.log" 2>&1 || die "config $cfg refused"
  "$ROOT/.venv/bin/hamrah-gateway" --config "$cfg" >>"$logf" 2>&1 </dev/null &
  GW_PID=$!
  deadline=$(( $(date +%s) + 30 ))
  until curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/healthz" && (( $(listeners) >= n )); do
    kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during start-up; see $logf"
    (( $(date +%s) < deadline )) || die "gateway not ready within 30 s"
    sleep 0.1
  done
  log "gateway workers=$n pid=$GW_PID ready (listening pids: $(ss -Hltnp "sport = :$GW_PORT" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' '))"
}

{
  echo "# hamrah-gateway beside its peers ($STAMP)"
  echo
  machine_info
  echo "- harness: DURATION=$DURATION REPS=$REPS VARIANTS=\"$VARIANTS\" CONNS=${CONNS:-50} THREADS=${THREADS:-1}${PEERS:+ PEERS=\"$PEERS\"}"
  echo "- gateway: workers in [$WORKERS_LIST], listen 127.0.0.1:$GW_PORT, admin 127.0.0.1:$ADMIN_PORT (on), protect [/],"
  echo "  public [/login], JSON access log at info $( [[ $GW_LOG == null ]] && echo 'to /dev/null' || echo 'to a file on disk (gateway-wN.log, gzipped after the run)'),"
  echo "  metrics on, cache_ttl 300 s (default); path normalization and header hygiene always run."
  echo "- command: $(printf '%q ' "$0" "$@")"
} >"$OUT/README.md"
cat "$OUT/README.md" >&2

for n in $WORKERS_LIST; do
  cfg="$OUT/gateway-w$n.yaml"
  write_config "$n" "$cfg"
  if [[ "$GW_LOG" == null ]]; then logf=/dev/null; else logf="$OUT/gateway-w$n.log"; fi
  rev="$(code_rev)"
  start_gateway "$n" "$cfg" "$logf"
  log "harness run for workers=$n (DURATION=$DURATION REPS=$REPS VARIANTS=$VARIANTS)"
  GATEWAY_URL="http://127.0.0.1:$GW_PORT/" GATEWAY_NAME="hamrah-w$n" "$HARNESS" \
    >"$OUT/harness-w$n.out" 2>"$OUT/harness-w$n.err" || { tail -20 "$OUT/harness-w$n.err" >&2; die "harness failed"; }
  curl -fs --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$OUT/metrics-w$n.txt" || log "could not read /metrics"
  stop_gateway
  latest="$(readlink -f "$PEER_BENCH_HOME/results/latest")"
  cp -r "$latest" "$OUT/harness-w$n"
  {
    echo
    echo "## workers: $n (gateway code $rev; harness results: harness-w$n/, raw $latest)"
    echo
    grep -v '^raw: ' "$latest/report.md" | sed '/^$/N;/^\n$/D'
    echo
    grep -E '^gateway_(requests_total|auth_calls_total|auth_cache_total)' "$OUT/metrics-w$n.txt" 2>/dev/null \
      | sed 's/^/    /' || true
    grep -h 'smoke hamrah' "$latest/run.log" | sed 's/^/    /' || true
  } >>"$OUT/README.md"
  if [[ -f "$OUT/gateway-w$n.log" ]]; then
    log "gateway log: $(wc -l <"$OUT/gateway-w$n.log") lines, $(du -h "$OUT/gateway-w$n.log" | cut -f1); gzip"
    gzip -f "$OUT/gateway-w$n.log"
  fi
done

ln -sfn "run-$STAMP" "$HERE/results/latest-run"
cat "$OUT/README.md"
echo
echo "results: $OUT"
