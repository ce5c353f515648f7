#!/usr/bin/env bash
# `make bench` (fnhook#7): brings the suite up if it is not, then runs the benchmark program
# in bench/ (floor, bridge floor, warm, cold, naive cold, function create; then, fnhook#15,
# runner memory and start CPU, a burst of new tenants, many tenants each called twice), which
# prints Markdown tables and writes bench/results/latest.json. Exits non-zero when the bench itself
# fails, not when a target is missed. Knobs: FNHOOK_BENCH_* (docs/performance.md).
source "$(dirname "$0")/common.sh"

gateway=${FNHOOK_BENCH_GATEWAY:-http://127.0.0.1:8080}
if ! curl -fs -m 2 "$gateway/healthz" >/dev/null; then
  log "the gateway does not answer at $gateway: bringing the suite up"
  "$FNHOOK_ROOT/scripts/infra.sh" up
  "$FNHOOK_ROOT/scripts/deploy.sh"
fi

# wrk is optional: the bench's own Go load generator is the reference; wrk is reported beside it.
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing wrk (optional)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || log "wrk not installed; the Go load generator alone is used"
fi

[ -f "$FNHOOK_STATE/secrets.env" ] || die "no $FNHOOK_STATE/secrets.env: run scripts/infra.sh up first"
# The admin key: the bench gets it through its environment, never on a command line.
FNHOOK_ADMIN_KEY=$(secret FNHOOK_ADMIN_KEY)
[ -n "$FNHOOK_ADMIN_KEY" ] || die "FNHOOK_ADMIN_KEY is not in $FNHOOK_STATE/secrets.env"
# The bench runs its bridge-floor job on Nomad as the operator and reads the runners'
# allocations (namespace "*"): the management token, also through the environment only.
NOMAD_TOKEN=$(secret NOMAD_TOKEN)
export FNHOOK_ADMIN_KEY NOMAD_TOKEN FNHOOK_BENCH_GATEWAY=$gateway
export FNHOOK_MODULES_DIR=${FNHOOK_MODULES_DIR:-$FNHOOK_STATE/modules}
export FNHOOK_BENCH_OUT=${FNHOOK_BENCH_OUT:-$FNHOOK_ROOT/bench/results/latest.json}

cd "$FNHOOK_ROOT"
exec go run ./bench
