#!/usr/bin/env bash
# Deploys the sample tenant "demo" with the function "hello" (examples/hello.js, which uses
# the npm module dayjs) through the gateway, calls it, and prints how to call it again.
# Exits non-zero, with the cause as Nomad and the handler report it, when the call does not
# answer 200: `make up` never claims success after a failure.
source "$(dirname "$0")/common.sh"

GW=${FNHOOK_GATEWAY_URL:-http://127.0.0.1:8080}
# The admin key reaches curl through a pipe (-H @file), never on a command line.
FNHOOK_ADMIN_KEY=$(secret FNHOOK_ADMIN_KEY)
[ -n "$FNHOOK_ADMIN_KEY" ] || die "no FNHOOK_ADMIN_KEY in $FNHOOK_STATE/secrets.env: run scripts/infra.sh up first"
admin_curl() { curl -H @<(printf 'Authorization: Bearer %s\n' "$FNHOOK_ADMIN_KEY") "$@"; }

# api METHOD PATH [BODY]: prints the answer body; fails on a non-2xx status with the body.
api() {
  local out status
  out=$(admin_curl -sS -m 30 -w '\n%{http_code}' -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$GW$2") \
    || die "$1 $2: gateway unreachable"
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  [[ $status == 2* ]] || die "$1 $2 answered $status: $out"
  printf '%s' "$out"
}

# Deploy only what is missing, so that a second `make up` changes nothing.
exists() { admin_curl -fs -m 30 -o /dev/null "$GW$1"; }
exists /v1/tenants/demo || api PUT /v1/tenants/demo '{}' >/dev/null
if ! exists /v1/tenants/demo/functions/hello; then
  body=$(node -e '
    const fs = require("fs");
    process.stdout.write(JSON.stringify({
      code: fs.readFileSync(process.argv[1], "utf8"),
      dependencies: { dayjs: "^1.11.0" },
      timeoutMs: 5000,
    }));' "$FNHOOK_ROOT/examples/hello.js")
  api PUT /v1/tenants/demo/functions/hello "$body" >/dev/null
fi
log "waiting for function demo/hello to be ready (its module is built once, then shared)"
ready() { admin_curl -fsS -m 30 "$GW/v1/tenants/demo/functions/hello" | grep -q '"status":"ready"'; }
if ! wait_for_quiet 180 ready; then
  die "demo/hello did not become ready: $(api GET /v1/tenants/demo/functions/hello)"
fi
token_file=$FNHOOK_STATE/demo-token
if [ ! -s "$token_file" ]; then
  (umask 077; api POST /v1/tenants/demo/tokens '{}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' >"$token_file")
fi

echo
echo "Calling the sample function through the gateway:"
echo "  curl -s '$GW/run/demo/hello?name=fnhook'"
hdrs=$(mktemp)
trap 'rm -f "$hdrs"' EXIT
answer=$(curl -sS -m 30 -D "$hdrs" "$GW/run/demo/hello?name=fnhook") || die "the call failed: the gateway did not answer"
status=$(head -1 "$hdrs" | tr -d '\r')
echo "  $status$(grep -qi '^x-fnhook-cold: 1' "$hdrs" && echo ' (cold: this call assigned a runner and loaded the function)')"
echo "  $answer"
if [[ $status != HTTP/*' 200'* ]]; then
  echo
  diagnose
  die "the sample call did not answer 200 (${status:-no status line}): fnhook is not working"
fi
echo
echo "fnhook is up. Gateway: $GW"
echo "  Admin key:        FNHOOK_ADMIN_KEY in $FNHOOK_STATE/secrets.env"
echo "  demo's token:     $token_file (manages /v1/tenants/demo/...)"
echo "  Call it again:    curl -s '$GW/run/demo/hello?name=you'"
echo "  Stop everything:  make down"
