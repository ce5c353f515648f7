#!/usr/bin/env bash
# Profiles the hot path of one local runner (services/handler/runner) under load: starts it
# with node --cpu-prof (parent) and spawn-prof.js (child), assigns it, loads the bench's
# plain function, drives /_fnhook/run/hello with wrk -t1 -c16 for DURATION seconds, stops it
# with SIGTERM (profiles are written on exit) and prints the top self-time functions.
#   bench/profile/runner.sh [DURATION]      (needs node and wrk; runs on the host, no Nomad)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${1:-10}
work=$(mktemp -d /tmp/fnhook-prof-XXXXXX)
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$((20000 + RANDOM % 20000))
mkdir -p "$work/modules" "$work/prof"

FNHOOK_PROF_DIR=$work/prof FNHOOK_RUNNER_TOKEN=$token FNHOOK_RUNNER_PORT=$port FNHOOK_RUNNER_HOST=127.0.0.1 \
  FNHOOK_RUNNER_MODULES=$work/modules FNHOOK_RUNNER_WORKDIR=$work/w \
  node --cpu-prof --cpu-prof-dir="$work/prof" --cpu-prof-name=parent.cpuprofile -r "$here/spawn-prof.js" \
  "$root/services/handler/runner/main.js" >"$work/runner.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

auth=(-H "authorization: Bearer $token" -H 'content-type: application/json')
curl -fs "${auth[@]}" -X POST "http://127.0.0.1:$port/_fnhook/assign" -d '{"tenant":"prof"}' >/dev/null
code='module.exports = async (ctx) => ({ body: { ok: true, path: ctx.path } });'
curl -fs "${auth[@]}" -X PUT "http://127.0.0.1:$port/_fnhook/functions/hello" \
  -d "{\"version\":1,\"code\":\"$code\",\"dependencies\":{},\"configuration\":{},\"timeoutMs\":10000}" >/dev/null
curl -fs -H "authorization: Bearer $token" "http://127.0.0.1:$port/_fnhook/run/hello" >/dev/null

wrk -t1 -c16 "-d${duration}s" --latency -H "authorization: Bearer $token" "http://127.0.0.1:$port/_fnhook/run/hello"
kill -TERM "$pid"
wait "$pid" || true
trap - EXIT
sleep 0.5
node "$here/cpuprofile-top.js" "$work"/prof/*.cpuprofile --top 20
echo "profiles and runner log: $work"
