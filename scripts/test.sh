#!/usr/bin/env bash
# `make test`: installs and starts the real servers if needed, runs the Go unit and
# integration tests, the runner's Node tests, then deploys the services as Nomad jobs and
# runs the end-to-end tests against them. Fails (never skips) when a server cannot start.
source "$(dirname "$0")/common.sh"
cd "$FNHOOK_ROOT"

# A canary in the shell that starts the infrastructure: the env-scrub test checks that it
# never reaches a task Nomad runs.
export FNHOOK_ENV_CANARY=canary-$RANDOM$RANDOM
start=$SECONDS
scripts/infra.sh up
log "infrastructure ready after $((SECONDS - start))s"

scripts/lint.sh

log "runner tests (node --test)"
(cd services/handler/runner && node --test test/)

log "Go unit and integration tests"
go test -count=1 -timeout 30m github.com/fnhook/fnhook/libs/... github.com/fnhook/fnhook/services/... github.com/fnhook/fnhook/bench/...

log "deploying the services as Nomad jobs for the end-to-end tests"
scripts/deploy.sh
go test -count=1 -timeout 20m github.com/fnhook/fnhook/e2e/...
log "all tests passed in $((SECONDS - start))s"
