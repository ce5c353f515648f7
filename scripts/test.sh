#!/usr/bin/env bash
# `make test`: runs `make up` from a brand-new state directory of its own (new secrets, Nomad
# data, DynamoDB data, module cache: the path a new machine takes, ending in the sample's
# call), then the script tests, the runner's Node tests, the Go unit and integration tests,
# and the end-to-end tests against the deployed services. Only the tool cache (FNHOOK_CACHE)
# is reused. Fails (never skips) when a server cannot start. At the end the servers are
# stopped; the state directory is removed when everything passed and kept (with its logs)
# when something failed.
#   FNHOOK_TEST_STATE=DIR   use DIR as the state directory (made if missing, kept)
#   FNHOOK_TEST_KEEP=1      leave the servers running and the state directory in place
source "$(dirname "$0")/common.sh"
cd "$FNHOOK_ROOT"

runs=$FNHOOK_CACHE/test-runs
if [ -n "${FNHOOK_TEST_STATE:-}" ]; then
  export FNHOOK_STATE=$FNHOOK_TEST_STATE
  mkdir -p "$FNHOOK_STATE"
  FNHOOK_TEST_KEEP=1
else
  mkdir -p "$runs"
  export FNHOOK_STATE
  FNHOOK_STATE=$(mktemp -d "$runs/$(date +%Y%m%d-%H%M%S)-XXXX")
fi
chmod 0755 "$FNHOOK_STATE"
log "state directory of this run: $FNHOOK_STATE"

finish() {
  local rc=$?
  if [ "${FNHOOK_TEST_KEEP:-}" = 1 ]; then
    log "servers left running (state in $FNHOOK_STATE; stop with FNHOOK_STATE=$FNHOOK_STATE make down)"
  elif [ $rc -eq 0 ]; then
    scripts/infra.sh purge >/dev/null 2>&1 || true
  else
    scripts/infra.sh down >/dev/null 2>&1 || true
    log "failed: logs kept in $FNHOOK_STATE/logs"
  fi
  # Keep the state of the last few failed runs only.
  if [ -d "$runs" ]; then
    find "$runs" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf || true
  fi
  exit $rc
}
trap finish EXIT

# A canary in the shell that starts the infrastructure: the env-scrub test checks that it
# never reaches a task Nomad runs.
export FNHOOK_ENV_CANARY=canary-$RANDOM$RANDOM
start=$SECONDS
log "make up, as on a new machine: servers, services, the sample's call"
scripts/up.sh
log "make up answered after $((SECONDS - start))s"

scripts/lint.sh

log "script tests"
go test -count=1 -run 'Script' github.com/fnhook/fnhook/e2e/...

log "runner tests (node --test)"
(cd services/handler/runner && node --test test/)

log "Go unit and integration tests"
go test -count=1 -timeout 30m github.com/fnhook/fnhook/libs/... github.com/fnhook/fnhook/services/... github.com/fnhook/fnhook/bench/...

log "end-to-end tests against the services make up deployed"
go test -count=1 -timeout 20m github.com/fnhook/fnhook/e2e/...
log "all tests passed in $((SECONDS - start))s"
