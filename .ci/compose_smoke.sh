#!/usr/bin/env bash
# CI step: the Dockerfile and docker-compose.yml, run for real.
#
#   bash .ci/compose_smoke.sh                 (from anywhere; GATEWAY_PORT=18080 to pick the port)
#
# 1. builds the image and brings the compose stack up, healthy, with the shared compose-smoke.sh
#    (rootful podman; ../shared/containers/ beside this repository, as in CI's fresh clone),
# 2. checks the image (non-root user, healthcheck, size) and the gateway's /readyz,
# 3. drives the sign-in flow through the published port (tests/support/compose_flow.py),
# 4. checks that the gateway logs JSON, starting with a "gateway started" line,
# 5. stops the gateway with SIGTERM and checks it exits 0, and takes the stack down;
# then the `scale` profile (Redis, two gateway replicas, HAProxy in front; SCALE_PORT, else 8090):
# 6. brings it up healthy, checks that every replica reaches Redis (/readyz),
# 7. drives the same sign-in flow through the load balancer,
# 8. checks across replicas: a session validated by one is a Redis hit on the other, and a session
#    revoked on one replica's admin port is refused by all of them;
# then the `tls` profile (TLS_PORT, else 8443; TLS_REDIRECT_PORT, else 8081):
# 9. brings it up healthy (tls-init made a local CA and certificate on first start), and checks an
#    HTTPS request verified against that CA and the plain listener's 308 to https;
# and always takes the stacks down again. Exits non-zero if any step failed. SKIP_SCALE=1 skips 6-8,
# SKIP_TLS=1 skips 9.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# The shared tools sit beside the repository; a clone made elsewhere (e.g. /tmp) finds them beside
# the repository it was cloned from.
find_smoke() {
  local origin candidate
  candidate=$(dirname "$REPO")/shared/containers/compose-smoke.sh
  if [[ ! -f $candidate ]]; then
    origin=$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || true)
    [[ -d $origin ]] && candidate=$(cd "$origin/.." && pwd -P)/shared/containers/compose-smoke.sh
  fi
  echo "$candidate"
}
SMOKE=${COMPOSE_SMOKE:-$(find_smoke)}
STATE=${COMPOSE_SMOKE_STATE:-/var/tmp/compose-smoke}
PROJECT=${COMPOSE_SMOKE_PROJECT:-hamrah-gateway-smoke}
SCALE_PROJECT=${COMPOSE_SMOKE_SCALE_PROJECT:-$PROJECT-scale}
TLS_PROJECT=${COMPOSE_SMOKE_TLS_PROJECT:-$PROJECT-tls}
export TLS_PORT=${TLS_PORT:-8443} TLS_REDIRECT_PORT=${TLS_REDIRECT_PORT:-8081}
IMAGE=hamrah-gateway:local
BASE_IMAGE=python:3.11-slim
# What the Dockerfile adds to python:3.11-slim. The official python:3.11-slim is about 130 MB
# unpacked, so 60 MB keeps the image under 200 MB; the local stand-in for it here is bigger
# (Debian's python3 with pip and headers), so the total printed here overstates the real one.
OWN_LIMIT_MB=${OWN_LIMIT_MB:-60}
PYTHON=${PYTHON:-python3}
# uv (installed by ./quickstart) reads the lock for the image check below.
UV=${UV:-$REPO/.uv/bin/uv}
T0=$(date +%s)

say() { printf '[compose_smoke] %s\n' "$*"; }
fail() { printf '[compose_smoke] FAIL: %s\n' "$*" >&2; FAILED=1; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
pm() { CONTAINERS_CONF=$STATE/containers.conf podman "$@"; }
FAILED=0
STARTED=0
CURRENT=$PROJECT   # the project the EXIT trap takes down

[[ -f $SMOKE ]] || { echo "[compose_smoke] FAIL: $SMOKE not found (shared/ must sit beside the repository or the one it was cloned from; or set COMPOSE_SMOKE)" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || { echo "[compose_smoke] FAIL: $PYTHON not found" >&2; exit 1; }
cd "$REPO"

# The published port: GATEWAY_PORT if given, else 8080, else (8080 taken) any free port.
port_free() { "$PYTHON" -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"; }
# pick_port VAR DEFAULT PROJECT WHAT: keep $VAR if set, else DEFAULT, else (DEFAULT taken by
# something other than PROJECT's own containers) any free port.
pick_port() {
  local var=$1 default=$2 project=$3 what=$4
  if [[ -z ${!var:-} ]]; then
    printf -v "$var" '%s' "$default"
    if ! port_free "$default" && [[ -z $(pm ps -q --filter "label=com.docker.compose.project=$project" 2>/dev/null) ]]; then
      printf -v "$var" '%s' "$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])')"
      say "port $default is taken on this machine; publishing $what on ${!var} instead"
    fi
  fi
  export "${var?}"
}
pick_port GATEWAY_PORT 8080 "$PROJECT" "the gateway"
# The same for the scale profile's load balancer.
pick_port SCALE_PORT 8090 "$SCALE_PROJECT" "the load balancer"
# The demo stack whatever a local .env says: the flow below needs the demo frontend and API.
export UPSTREAM_URL=http://frontend:3000
export AUTH_VALIDATE_URL=http://api:8787/api/auth/sessions/validate
export AUTH_COOKIE=session
# podman-compose builds every service with a build: section at once; all three name the same
# build, so one at a time lets the second and third come from the layer cache (about 40 s instead
# of 70 s on a cold cache).
export COMPOSE_PARALLEL_LIMIT=${COMPOSE_PARALLEL_LIMIT:-1}

# Service names (frontend, api) resolve on a compose network only with a DNS plugin: podman's CNI
# backend needs Debian's dnsname plugin, which compose-smoke.sh does not install (netavark would
# bring aardvark-dns instead). Without it the stack comes up "healthy" but every request is a 502.
ensure_service_dns() {
  local d
  for d in /usr/lib/cni /usr/libexec/cni /opt/cni/bin; do [[ -x $d/dnsname ]] && return 0; done
  for d in /usr/lib/podman /usr/libexec/podman; do [[ -x $d/aardvark-dns ]] && return 0; done
  say "installing Debian's dnsname CNI plugin (service names on podman's CNI networks need it)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends golang-github-containernetworking-plugin-dnsname >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends golang-github-containernetworking-plugin-dnsname >/dev/null; } \
    || { echo "[compose_smoke] FAIL: could not install golang-github-containernetworking-plugin-dnsname" >&2; exit 1; }
}
ensure_service_dns
# A network made before the plugin was there keeps DNS off: let compose-smoke.sh remove it (and
# the project's leftover containers) so that `up` makes it anew.
if [[ $(pm network inspect "${PROJECT}_default" --format '{{.DNSEnabled}}' 2>/dev/null || true) == false ]]; then
  say "network ${PROJECT}_default has DNS off; removing the project's leftovers first"
  bash "$SMOKE" --down -p "$PROJECT" . >/dev/null
fi
if [[ $(pm network inspect "${SCALE_PROJECT}_default" --format '{{.DNSEnabled}}' 2>/dev/null || true) == false ]]; then
  say "network ${SCALE_PROJECT}_default has DNS off; removing the project's leftovers first"
  COMPOSE_PROFILES=scale bash "$SMOKE" --down -p "$SCALE_PROJECT" . >/dev/null
fi

# Take the current project down (the logs of its containers first, when something failed).
take_down() {
  local rc=$1 t
  if [[ $STARTED == 1 ]]; then
    if [[ $FAILED != 0 || $rc != 0 ]]; then
      for c in $(pm ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$CURRENT" 2>/dev/null); do
        echo "---- last 30 log lines of $c ----"; pm logs --tail 30 "$c" 2>&1 || true
      done
    fi
    t=$(date +%s)
    bash "$SMOKE" --down -p "$CURRENT" . || { echo "[compose_smoke] FAIL: compose-smoke.sh --down failed" >&2; return 1; }
    say "$CURRENT down in $(elapsed "$t")"
    STARTED=0
  fi
}

down() {
  local rc=$?
  trap - EXIT INT TERM
  take_down "$rc" || rc=1
  [[ $FAILED == 0 ]] || rc=1
  if [[ $rc == 0 ]]; then say "PASS in $(elapsed "$T0")"; else say "FAILED after $(elapsed "$T0")"; fi
  exit "$rc"
}
trap down EXIT

compose_up() {  # project what: build, start, wait until healthy (compose-smoke.sh), or stop here
  local t; t=$(date +%s)
  STARTED=1
  if ! bash "$SMOKE" -p "$1" --timeout 120 .; then
    fail "compose-smoke.sh: $2 did not come up healthy"
    exit 1
  fi
  say "$2 up and healthy in $(elapsed "$t")"
}
trap 'exit 130' INT TERM

# ---- 1. build + up + healthy
say "compose up (project $PROJECT, gateway on port $GATEWAY_PORT) ..."
compose_up "$PROJECT" "the stack"

gateway=$(pm ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=gateway" | head -n 1)
[[ -n $gateway ]] || { fail "no running gateway container in project $PROJECT"; exit 1; }

# ---- 2. the image
user=$(pm image inspect "$IMAGE" --format '{{.Config.User}}')
[[ $user == 10001 || $user == 10001:* ]] || fail "image $IMAGE runs as '${user:-root}', expected uid 10001"
uid=$(pm exec "$gateway" id -u 2>/dev/null || echo "?")
[[ $uid == 10001 ]] || fail "the gateway process runs as uid $uid, expected 10001"
hc=$(pm image inspect "$IMAGE" --format '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}' 2>/dev/null || true)
[[ $hc == CMD-SHELL*9901/healthz* ]] || fail "image $IMAGE has no CMD-SHELL HEALTHCHECK on the admin /healthz (got '${hc:-none}')"
total=$(( $(pm image inspect "$IMAGE" --format '{{.Size}}') / 1000000 ))
base=$(( $(pm image inspect "$BASE_IMAGE" --format '{{.Size}}') / 1000000 ))
own=$(( total - base ))
if (( own <= OWN_LIMIT_MB )); then
  say "image $IMAGE: $total MB = $base MB $BASE_IMAGE (the local stand-in) + $own MB own layers (limit $OWN_LIMIT_MB MB); user $user"
else fail "image $IMAGE adds $own MB to $BASE_IMAGE, over the $OWN_LIMIT_MB MB limit"; fi

# The image runs the runtime part of uv.lock: every distribution in its venv at the version the
# lock names for the image's Python (markers evaluated there), none missing, none extra.
if image_env=$(pm exec "$gateway" python -c '
import importlib.metadata as m, json, os, platform, sys
print(json.dumps({
    "environment": {
        "implementation_name": sys.implementation.name, "os_name": os.name,
        "platform_machine": platform.machine(), "platform_python_implementation":
        platform.python_implementation(), "platform_system": platform.system(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform,
    },
    "installed": {d.metadata["Name"]: d.version for d in m.distributions()},
}))' 2>&1) && locked=$("$UV" export -q --frozen --no-hashes --no-emit-project --no-header --format requirements-txt 2>&1); then
  if verdict=$("$REPO/.venv/bin/python" - "$image_env" "$locked" <<'PY'
import json, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as norm
seen = json.loads(sys.argv[1])
image = {norm(n): v for n, v in seen["installed"].items() if norm(n) != "hamrah-gateway"}
lock = {}
for line in sys.argv[2].splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(seen["environment"]):
            lock[norm(req.name)] = str(req.specifier).removeprefix("==")
wrong = {n: (image.get(n), v) for n, v in lock.items() if image.get(n) != v}
extra = sorted(set(image) - set(lock))
print(", ".join(f"{n} {v}" for n, v in sorted(image.items())))
if wrong or extra:
    sys.exit(f"image vs lock: {wrong} extra: {extra}")
PY
  ); then say "image runs exactly the locked runtime set (Python $(sed 's/.*"python_full_version": "\([^"]*\)".*/\1/' <<<"$image_env")): $verdict"
  else fail "the image's Python distributions differ from uv.lock: $verdict"; fi
else
  fail "could not list the image's distributions or export uv.lock: $image_env $locked"
fi

# /readyz: the gateway reaches the frontend and the auth API by their service names.
if ready=$(pm exec "$gateway" python -c '
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:9901/readyz", timeout=5).read().decode())
except urllib.error.HTTPError as exc:
    sys.exit(f"{exc.code} {exc.read().decode()}")
' 2>&1); then
  say "gateway /readyz: $ready"
else
  fail "gateway /readyz is not ready (service DNS on the compose network?): $(tail -n 3 <<<"$ready")"
fi

# ---- 3. the sign-in flow through the published port
t=$(date +%s)
if "$PYTHON" tests/support/compose_flow.py "http://127.0.0.1:$GATEWAY_PORT" --timeout 60; then
  say "flow passed in $(elapsed "$t")"
else
  fail "the sign-in flow through http://127.0.0.1:$GATEWAY_PORT failed"
fi

# ---- 4. JSON logs
if pm logs "$gateway" 2>&1 | "$PYTHON" -c '
import json, sys
lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
events = []
for line in lines:
    try:
        record = json.loads(line)
    except ValueError:
        sys.exit(f"not a JSON log line: {line[:200]!r}")
    events.append(record.get("event") if isinstance(record, dict) else None)
if "gateway started" not in events:
    sys.exit(f"no \"gateway started\" line among {len(lines)} log lines")
print(f"{len(lines)} log lines, all JSON, the first event {events[0]!r}")
'; then say "gateway logs are JSON"
else fail "the gateway's logs are not JSON lines with a \"gateway started\" event"; fi

# ---- 5. SIGTERM -> exit 0
t=$(date +%s)
# (podman here warns on stderr that it cannot remove a systemd healthcheck timer: noise)
if ! out=$(pm stop --time 15 "$gateway" 2>&1); then fail "podman stop $gateway: $out"; fi
code=$(pm inspect "$gateway" --format '{{.State.ExitCode}}')
if [[ $code == 0 ]]; then say "gateway stopped on SIGTERM with exit 0 in $(elapsed "$t")"
else fail "gateway exited $code on SIGTERM (expected 0)"; fi

take_down 0 || FAILED=1
if [[ ${SKIP_SCALE:-0} == 1 ]]; then say "SKIP_SCALE=1: the scale profile is not run"
else

# ---- 6. the scale profile: build + up + healthy
# COMPOSE_PROFILES (not --profile, which compose-smoke.sh does not pass on) selects the profile,
# for `up` and for `--down` alike.
export COMPOSE_PROFILES=scale
CURRENT=$SCALE_PROJECT
say "compose up, profile scale (project $SCALE_PROJECT, load balancer on port $SCALE_PORT) ..."
compose_up "$SCALE_PROJECT" "the scale stack"

mapfile -t replicas < <(pm ps --format '{{.Names}}' --filter "label=com.docker.compose.project=$SCALE_PROJECT" --filter "label=com.docker.compose.service=gateway-scale" | sort)
(( ${#replicas[@]} >= 2 )) || { fail "expected 2 gateway-scale replicas running, found ${#replicas[@]}"; exit 1; }
admins=()
for c in "${replicas[@]}"; do
  ip=$(pm inspect "$c" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')
  [[ -n $ip ]] || { fail "no address for $c"; exit 1; }
  admins+=("http://$ip:9901")
done
say "replicas: ${replicas[*]} (admin ${admins[*]})"

# /readyz on every replica, Redis included (the admin ports are reachable from this host).
for admin in "${admins[@]}"; do
  if ready=$("$PYTHON" -c '
import json, sys, urllib.request
body = json.load(urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=5))
print(json.dumps(body))
sys.exit(0 if body["checks"].get("redis") == "ok" and body["status"] == "ready" else 1)
' "$admin" 2>&1); then say "$admin/readyz: $ready"
  else fail "$admin/readyz is not ready with Redis: $(tail -n 3 <<<"$ready")"; fi
done

# ---- 7. the sign-in flow through the load balancer
t=$(date +%s)
if "$PYTHON" tests/support/compose_flow.py "http://127.0.0.1:$SCALE_PORT" --timeout 60; then
  say "flow through the load balancer passed in $(elapsed "$t")"
else
  fail "the sign-in flow through http://127.0.0.1:$SCALE_PORT (the load balancer) failed"
fi

# ---- 8. across replicas: the shared cache and revocation
t=$(date +%s)
admin_token=$(pm exec "${replicas[0]}" printenv GATEWAY_ADMIN_TOKEN)
if "$PYTHON" - "http://127.0.0.1:$SCALE_PORT" "$admin_token" "${admins[@]}" <<'PY'; then
"""Through the LB (round robin): one validation serves every replica; a revocation on one ends all."""
import http.client
import json
import re
import sys
import time
import urllib.request
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

lb, token, admins = urlsplit(sys.argv[1]), sys.argv[2], sys.argv[3:]
BROWSER = {"Accept": "text/html"}


def request(method, path, headers=None, body=None):
    conn = http.client.HTTPConnection(lb.hostname, lb.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def metric(admin, name, labels):
    text = urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()
    pattern = re.compile(r"^" + re.escape(name) + r"\{([^}]*)\} (\S+)$")
    total = 0.0
    for line in text.splitlines():
        match = pattern.match(line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def answered(admin):
    return sum(metric(admin, "gateway_requests_total", {"auth": a}) for a in ("validated", "cached"))


def check(condition, message):
    if not condition:
        print(f"scale check: FAIL: {message}")
        sys.exit(1)


# HAProxy puts a replica in rotation once its DNS name resolves and a health check passed: wait
# until every replica has answered a request through the LB.
base = [metric(a, "gateway_requests_total", {}) for a in admins]
deadline = time.monotonic() + 20
while not all(metric(a, "gateway_requests_total", {}) > b for a, b in zip(admins, base)):
    check(time.monotonic() < deadline, "not every replica gets requests through the LB")
    check(request("GET", "/").status == 200, "GET / through the LB failed")

form = urlencode({"email": "grace@example.com", "name": "Grace", "next": "/dashboard"}).encode()
reply = request("POST", "/login", {**BROWSER, "Content-Type": "application/x-www-form-urlencoded"}, form)
check(reply.status == 303, f"POST /login answered {reply.status}")
jar = SimpleCookie()
for header in reply.headers.get_all("Set-Cookie") or []:
    jar.load(header)
check("session" in jar, "POST /login set no session cookie")
session = jar["session"].value
cookie = {**BROWSER, "Cookie": f"session={session}"}

calls_before = sum(metric(a, "gateway_auth_calls_total", {"result": "valid"}) for a in admins)
served_before = [answered(a) for a in admins]
statuses = [request("GET", "/dashboard", cookie).status for _ in range(2 * len(admins))]
check(statuses == [200] * len(statuses), f"GET /dashboard signed in: {statuses}")
served = [answered(a) - b for a, b in zip(admins, served_before)]
calls = sum(metric(a, "gateway_auth_calls_total", {"result": "valid"}) for a in admins) - calls_before
check(all(n > 0 for n in served), f"not every replica served the session: {served}")
check(calls == 1, f"{calls:g} validations for one session on {len(admins)} replicas (expected 1)")
print(f"scale check: ok: {len(statuses)} requests over {len(admins)} replicas {served}, 1 auth API call")

reply = request("GET", "/logout", cookie)
check(reply.status == 303, f"GET /logout answered {reply.status}")
# The auth API has ended the session; the replicas still hold it for up to cache_ttl ...
stale = [request("GET", "/dashboard", cookie).status for _ in range(2 * len(admins))]
check(stale == [200] * len(stale), f"expected the cached session still served, got {stale}")
# ... until it is revoked, on one replica only.
revoke = urllib.request.Request(
    admins[0] + "/sessions/revoke",
    data=json.dumps({"session": session}).encode(),
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    method="POST",
)
result = json.load(urllib.request.urlopen(revoke, timeout=5))
check(result.get("shared") is True, f"the revocation did not reach Redis: {result}")
# The other replicas hear of it over Redis pub/sub: within a second, every one refuses it.
started = time.monotonic()
while True:
    after = [request("GET", "/dashboard", cookie).status for _ in range(2 * len(admins))]
    if after == [302] * len(after):
        break
    check(time.monotonic() - started < 1.0, f"1 s after the revocation on one replica: {after}")
elapsed = time.monotonic() - started
print(
    f"scale check: ok: signed out, still served from the caches {stale};"
    f" revoked on one replica -> {after} within {elapsed * 1000:.0f} ms"
)
PY
  say "cross-replica checks passed in $(elapsed "$t")"
else
  fail "the cross-replica checks (shared cache, revocation) through the load balancer failed"
fi
take_down 0 || FAILED=1
fi

# ---- 9. the tls profile: a local CA made on first start, the demo on https
[[ ${SKIP_TLS:-0} == 1 ]] && { say "SKIP_TLS=1: the tls profile is not run"; exit 0; }
export COMPOSE_PROFILES=tls
CURRENT=$TLS_PROJECT
say "compose up, profile tls (project $TLS_PROJECT, https on port $TLS_PORT) ..."
compose_up "$TLS_PROJECT" "the tls stack"
tls_gateway=$(pm ps -q --filter "label=com.docker.compose.project=$TLS_PROJECT" --filter "label=com.docker.compose.service=gateway-tls" | head -n 1)
[[ -n $tls_gateway ]] || { fail "no running gateway-tls container in project $TLS_PROJECT"; exit 1; }
ca_copy=$(mktemp)
if ! pm cp "$tls_gateway:/etc/hamrah-gateway/tls/ca.pem" "$ca_copy"; then fail "cannot copy ca.pem out of $tls_gateway"; exit 1; fi
if "$PYTHON" - "$ca_copy" "$TLS_PORT" "$TLS_REDIRECT_PORT" <<'PY'
import http.client, ssl, sys
ca, port, plain = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Verified against the generated CA only: a certificate for another name or CA fails here.
tls = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca), timeout=10)
tls.request("GET", "/dashboard", headers={"Accept": "text/html"})
answer = tls.getresponse()
assert answer.status == 302 and answer.getheader("Location") == "/login?next=%2Fdashboard", answer.status
version = tls.sock.version()
redirect = http.client.HTTPConnection("localhost", plain, timeout=10)
redirect.request("GET", "/dashboard?x=1")
moved = redirect.getresponse()
expected = f"https://localhost:8443/dashboard?x=1"
assert moved.status == 308 and moved.getheader("Location") == expected, (moved.status, moved.getheader("Location"))
print(f"tls check: ok: {version} verified against the generated CA; http -> 308 {expected}")
PY
then say "https checks passed"
else fail "the https checks against the generated CA failed"; fi
