#!/usr/bin/env bash
# Builds the service binaries and (re)deploys the four services as Nomad jobs, then waits
# until Consul lists every fnhook service as passing. Running it again with nothing
# changed is a no-op: Nomad keeps the running allocations.
source "$(dirname "$0")/common.sh"

"$FNHOOK_ROOT/scripts/infra.sh" sync-runner
BIN=$FNHOOK_ROOT/bin
mkdir -p "$BIN"
log "building services"
(cd "$FNHOOK_ROOT" && for s in gateway mgmt handler builder; do
  go build -trimpath -o "$BIN/$s.new" "./services/$s" || exit 1
  if cmp -s "$BIN/$s.new" "$BIN/$s"; then rm "$BIN/$s.new"; else mv "$BIN/$s.new" "$BIN/$s"; fi
done) || die "go build failed"

# shellcheck disable=SC1090
set -a; source "$FNHOOK_STATE/secrets.env"; set +a
build_id=$(cat "$BIN"/gateway "$BIN"/mgmt "$BIN"/handler "$BIN"/builder "$FNHOOK_ROOT/jobs/runner.nomad.hcl" | sha256sum | cut -c1-16)

# Job variables travel as NOMAD_VAR_* in the environment of `nomad job run` (each job reads
# the ones it declares), so secrets never appear on a command line.
export NOMAD_ADDR=http://127.0.0.1:4646
export NOMAD_VAR_bin_dir=$BIN
export NOMAD_VAR_build_id=$build_id
export NOMAD_VAR_log_level=${FNHOOK_LOG_LEVEL:-info}
export NOMAD_VAR_admin_key=$FNHOOK_ADMIN_KEY
export NOMAD_VAR_handler_secret=$FNHOOK_HANDLER_SECRET
export NOMAD_VAR_aws_access_key_id=$FNHOOK_AWS_ACCESS_KEY_ID
export NOMAD_VAR_aws_secret_access_key=$FNHOOK_AWS_SECRET_ACCESS_KEY
export NOMAD_VAR_modules_dir=$FNHOOK_STATE/modules
export NOMAD_VAR_runner_job_file=$FNHOOK_ROOT/jobs/runner.nomad.hcl
NOMAD_VAR_npm_registry=$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)
export NOMAD_VAR_npm_registry
export NOMAD_VAR_npm_cafile=${NODE_EXTRA_CA_CERTS:-}

for job in mgmt builder handler gateway; do
  out=$("$NOMAD_BIN" job run -detach "$FNHOOK_ROOT/jobs/$job.nomad.hcl" 2>&1) || die "nomad job run jobs/$job.nomad.hcl failed: $out"
done
unset NOMAD_VAR_admin_key NOMAD_VAR_handler_secret NOMAD_VAR_aws_secret_access_key

passing() {
  local s
  for s in gateway mgmt handler builder; do
    curl -fs "http://127.0.0.1:8500/v1/health/service/fnhook-$s?passing=true" | grep -q '"ServiceID"' || return 1
  done
}
log "waiting for the services to pass their checks in Consul"
if ! wait_for_quiet 120 passing; then
  for s in gateway mgmt handler builder; do
    curl -fs "http://127.0.0.1:8500/v1/health/service/fnhook-$s?passing=true" | grep -q '"ServiceID"' \
      || log "fnhook-$s is not passing: see 'nomad alloc logs -stderr -job fnhook-$s' (NOMAD_ADDR=$NOMAD_ADDR, binary $NOMAD_BIN)"
  done
  diagnose
  die "services did not become healthy"
fi
log "services are up: gateway http://127.0.0.1:8080, mgmt :8081, handler :8082, builder :8083"
