#!/usr/bin/env bash
# CPU profile of the gateway's cached path: workers 1 under py-spy while wrk drives it.
#
#   bench/profile.sh                     # 15 s clean pass + 15 s profiled pass
#   SECONDS_PER_PASS=5 NATIVE=0 bench/profile.sh
#
# Starts the harness's upstream and auth API (fast) nginx configs on ports of its own (UP_PORT,
# AUTH_PORT: the harness's 18080/18081 may be busy with another run), the gateway
# (same config as run.sh: protect [/], JSON access log to a file, metrics, admin on), warms the
# cache, then:
#   pass 1 (clean):    wrk -t1 -c50 -d${SECONDS_PER_PASS}s, gateway CPU (utime+stime) / requests
#   pass 2 (profiled): the same under `py-spy record --pid ... --format raw [--native]`
# and writes bench/results/profile-<ts>/: profile.txt (collapsed stacks), stages.md (bench/stages.py:
# CPU split by stage, µs/request from the clean pass, hotspots), wrk outputs, gateway log.
# Knobs: SECONDS_PER_PASS=15 RATE=250 NATIVE=1 CONNS=50 GW_PORT=18210 ADMIN_PORT=18211
#        UP_PORT=18212 AUTH_PORT=18213 (auth stub_status on 18214)
# A/B knobs (experiments only; the defaults are the real configuration):
#        POLICY=1       also configure a route, an optional prefix and a require rule
#        ASSERTION=1    sign the identity (assertion on, with a key made for the run)
#        PROFILE=0      clean pass only, no py-spy
#        LOG_LEVEL=info the gateway's log level (warning drops the access line: its cost)
#        GC_TUNE=       "freeze" (gc.freeze() after imports), "freeze,50000" (+ gc threshold0),
#                       "50000": the gateway is started through python -c with that applied
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CONF="${PEER_CONF:-$ROOT/../shared/bench/peers/conf}"
SECONDS_PER_PASS="${SECONDS_PER_PASS:-15}"
RATE="${RATE:-250}"
NATIVE="${NATIVE:-1}"
CONNS="${CONNS:-50}"
GW_PORT="${GW_PORT:-18210}"
ADMIN_PORT="${ADMIN_PORT:-18211}"
UP_PORT="${UP_PORT:-18212}"
AUTH_PORT="${AUTH_PORT:-18213}"
STUB_PORT="${STUB_PORT:-18214}"
PROFILE="${PROFILE:-1}"
LOG_LEVEL="${LOG_LEVEL:-info}"
GC_TUNE="${GC_TUNE:-}"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$HERE/results/profile-$STAMP"
mkdir -p "$OUT"
log() { echo "[$(date +%T)] profile.sh: $*" | tee -a "$OUT/run.log" >&2; }
die() { log "ERROR: $*"; exit 1; }
CLK_TCK="$(getconf CLK_TCK)"

for p in "$UP_PORT" "$AUTH_PORT" "$STUB_PORT" "$GW_PORT" "$ADMIN_PORT"; do
  ss -Hltn "sport = :$p" | grep -q . && die "port 127.0.0.1:$p is in use (another bench running?)"
done
command -v wrk >/dev/null && command -v nginx >/dev/null || die "needs wrk and nginx (run bench/run.sh once: its harness installs them)"

NGINX_PIDS=()
GW_PID=""
cleanup() {
  if [[ -n "$GW_PID" ]] && kill -0 "$GW_PID" 2>/dev/null; then
    kill -TERM "$GW_PID"; for _ in $(seq 1 100); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$GW_PID" 2>/dev/null && kill -KILL "$GW_PID"
  fi
  local p; for p in "${NGINX_PIDS[@]}"; do kill -QUIT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_nginx() {  # name conf-from-harness
  local d="$OUT/$1"; mkdir -p "$d/tmp"
  sed -e "s/127.0.0.1:18080/127.0.0.1:$UP_PORT/; s/127.0.0.1:18081/127.0.0.1:$AUTH_PORT/; s/127.0.0.1:18089/127.0.0.1:$STUB_PORT/" \
    "$CONF/$2" >"$d/nginx.conf"
  nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' &
  NGINX_PIDS+=($!)
}
start_nginx upstream upstream.nginx.conf
start_nginx auth auth-fast.nginx.conf
for p in "$UP_PORT" "$AUTH_PORT"; do
  for _ in $(seq 1 50); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/" && break; sleep 0.1; done
done

# POLICY=1: the issue-9 features configured beside the measured path (a route, an optional
# prefix, a require rule), to check they cost the cached path nothing measurable.
config_flags=()
[[ "${POLICY:-0}" == 1 ]] && config_flags=(--policy)
# ASSERTION=1: the signed identity on (issue 16), so its cost is this run against one without.
if [[ "${ASSERTION:-0}" == 1 ]]; then
  "$ROOT/.venv/bin/hamrah-gateway" keygen "$OUT/assertion.pem" >/dev/null
  config_flags+=(--assertion-key "$OUT/assertion.pem")
fi
"$ROOT/.venv/bin/python" "$HERE/gwbench.py" config --port "$GW_PORT" --admin-port "$ADMIN_PORT" \
  --upstream "http://127.0.0.1:$UP_PORT" \
  --validate-url "http://127.0.0.1:$AUTH_PORT/api/auth/sessions/validate" \
  --log-level "$LOG_LEVEL" "${config_flags[@]}" >"$OUT/gateway.yaml"
REV="$("$ROOT/.venv/bin/python" "$HERE/gwbench.py" revision)"
if [[ -z "$GC_TUNE" ]]; then
  "$ROOT/.venv/bin/hamrah-gateway" --config "$OUT/gateway.yaml" >>"$OUT/gateway.log" 2>&1 </dev/null &
else
  gc_code="import gc, sys; import gateway.cli, gateway.service, gateway.server, gateway.workers"
  for t in ${GC_TUNE//,/ }; do
    case "$t" in
      freeze) gc_code+="; gc.collect(); gc.freeze()" ;;
      [0-9]*) gc_code+="; gc.set_threshold($t, *gc.get_threshold()[1:])" ;;
      *) die "GC_TUNE: unknown item $t" ;;
    esac
  done
  gc_code+="; sys.exit(gateway.cli.main(sys.argv[1:]))"
  log "GC_TUNE=$GC_TUNE: python -c '$gc_code'"
  "$ROOT/.venv/bin/python" -c "$gc_code" --config "$OUT/gateway.yaml" >>"$OUT/gateway.log" 2>&1 </dev/null &
fi
GW_PID=$!
deadline=$(( $(date +%s) + 30 ))
until curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz"; do
  kill -0 "$GW_PID" 2>/dev/null || die "gateway exited; see $OUT/gateway.log"
  (( $(date +%s) < deadline )) || die "gateway not ready in 30 s"
  sleep 0.1
done
URL="http://127.0.0.1:$GW_PORT/"
[[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Cookie: session=GOODTOKEN' "$URL")" == 200 ]] || die "smoke request failed"
wrk -t1 -c"$CONNS" -d2s -H 'Cookie: session=GOODTOKEN' "$URL" >/dev/null 2>&1 || true

ticks() { local s; s="$(cat "/proc/$GW_PID/stat")"; s="${s##*) }"; read -r -a f <<<"$s"; echo $((f[11] + f[12])); }
requests_of() { awk '/requests in/{print $1}' "$1"; }
box() { awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print $2+$3+$4+$7+$8, t}' /proc/stat; }

log "pass 1 (clean): wrk -t1 -c$CONNS -d${SECONDS_PER_PASS}s"
t0="$(ticks)"; read -r b0 bt0 <<<"$(box)"
wrk -t1 -c"$CONNS" -d"${SECONDS_PER_PASS}s" --latency -H 'Cookie: session=GOODTOKEN' "$URL" >"$OUT/wrk-clean.txt" 2>&1
t1="$(ticks)"; read -r b1 bt1 <<<"$(box)"
clean_req="$(requests_of "$OUT/wrk-clean.txt")"
clean_us="$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$clean_req" 'BEGIN{printf "%.1f", 1e6 * t / hz / r}')"
log "clean: $clean_req requests, gateway CPU $(( t1 - t0 )) ticks = $clean_us µs/request, box busy $(( 100 * (b1 - b0) / (bt1 - bt0) ))%"

if [[ "$PROFILE" != 1 ]]; then
  echo "clean: $clean_req requests, $(awk '/Requests\/sec/{print $2}' "$OUT/wrk-clean.txt") req/s, $clean_us µs/request (LOG_LEVEL=$LOG_LEVEL GC_TUNE=$GC_TUNE, code $REV)" | tee "$OUT/clean.txt"
  log "results: $OUT"
  exit 0
fi
spy=("$ROOT/.venv/bin/py-spy" record --pid "$GW_PID" --rate "$RATE" --duration "$((SECONDS_PER_PASS + 1))" --format raw -o "$OUT/profile.txt")
[[ "$NATIVE" == 1 ]] && spy+=(--native)
log "pass 2 (profiled): ${spy[*]}"
"${spy[@]}" >"$OUT/py-spy.log" 2>&1 &
SPY_PID=$!
sleep 0.5
t0="$(ticks)"
wrk -t1 -c"$CONNS" -d"${SECONDS_PER_PASS}s" --latency -H 'Cookie: session=GOODTOKEN' "$URL" >"$OUT/wrk-profiled.txt" 2>&1
t1="$(ticks)"
wait "$SPY_PID" || { cat "$OUT/py-spy.log" >&2; die "py-spy failed"; }
prof_req="$(requests_of "$OUT/wrk-profiled.txt")"
prof_us="$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$prof_req" 'BEGIN{printf "%.1f", 1e6 * t / hz / r}')"
log "profiled: $prof_req requests, $prof_us µs/request (py-spy pauses the process to sample: higher)"

{
  echo "# Gateway CPU profile: cached protected path ($STAMP)"
  echo
  echo "- machine: $(date -Is), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
  echo "- gateway code: $REV"
  echo "- load: wrk -t1 -c$CONNS -H 'Cookie: session=GOODTOKEN' $URL, ${SECONDS_PER_PASS} s per pass; upstream nginx 1 KiB page, auth nginx (fast); gateway workers 1, every feature on, access log to a file (LOG_LEVEL=$LOG_LEVEL GC_TUNE=${GC_TUNE:-none})"
  echo "- clean pass: $(awk '/Requests\/sec/{print $2}' "$OUT/wrk-clean.txt") req/s, $clean_req requests, gateway CPU $clean_us µs/request"
  echo "- profiled pass: $(awk '/Requests\/sec/{print $2}' "$OUT/wrk-profiled.txt") req/s, $prof_req requests, $prof_us µs/request under py-spy (rate $RATE Hz, native=$NATIVE)"
  echo
  "$ROOT/.venv/bin/python" "$HERE/stages.py" "$OUT/profile.txt" --us-per-request "$clean_us"
} >"$OUT/stages.md"
cat "$OUT/stages.md"
ln -sfn "profile-$STAMP" "$HERE/results/latest-profile"
log "results: $OUT"
