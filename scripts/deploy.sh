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

build_id=$(cat "$BIN"/gateway "$BIN"/mgmt "$BIN"/handler "$BIN"/builder "$FNHOOK_ROOT/jobs/runner.nomad.hcl" | sha256sum | cut -c1-16)
# The operator's management token, for this script's own calls (environment only).
NOMAD_TOKEN=$(secret NOMAD_TOKEN)
export NOMAD_TOKEN NOMAD_ADDR=http://$NOMAD_HTTP

# handler_token prints the handler's Nomad token (policy fnhook-handler: runner jobs only),
# made once per Nomad cluster.
handler_token() {
  local accessor
  accessor=$(nomad_api /v1/acl/tokens | jq -r '[.[] | select(.Name == "fnhook-handler")][0].AccessorID // empty')
  if [ -n "$accessor" ]; then
    nomad_api "/v1/acl/token/$accessor" | jq -r .SecretID
  else
    jq -n '{Name: "fnhook-handler", Type: "client", Policies: ["fnhook-handler"]}' \
      | nomad_api /v1/acl/token -X POST --data-binary @- | jq -r .SecretID
  fi
}
htoken=$(handler_token) && [ -n "$htoken" ] || die "could not get the handler's Nomad token"

# put_secrets SERVICE KEY=VALUE...: writes the Nomad Variable nomad/jobs/fnhook-SERVICE in the
# namespace fnhook, the only place service secrets live; the job's template reads it with
# the task's workload identity. The body goes through a pipe, never on a command line.
put_secrets() {
  local svc=$1; shift
  printf '%s\n' "$@" | jq -Rn --arg p "nomad/jobs/fnhook-$svc" \
    '{Namespace: "fnhook", Path: $p, Items: ([inputs | capture("^(?<k>[^=]+)=(?<v>.*)$") | {(.k): .v}] | add)}' \
    | nomad_api "/v1/var/nomad/jobs/fnhook-$svc?namespace=fnhook" -X PUT --data-binary @- >/dev/null \
    || die "could not write the secrets of fnhook-$svc to Nomad Variables"
}
amqp() { printf 'amqp://fnhook-%s:%s@127.0.0.1:5672/' "$1" "$(secret "RABBIT_PASSWORD_${1^^}")"; }
aws=("FNHOOK_AWS_ACCESS_KEY_ID=$(secret FNHOOK_AWS_ACCESS_KEY_ID)" "FNHOOK_AWS_SECRET_ACCESS_KEY=$(secret FNHOOK_AWS_SECRET_ACCESS_KEY)")
put_secrets gateway "FNHOOK_HANDLER_SECRET=$(secret FNHOOK_HANDLER_SECRET)" "FNHOOK_CONSUL_TOKEN=$(secret CONSUL_TOKEN_GATEWAY)" \
  "FNHOOK_AMQP_URL=$(amqp gateway)"
put_secrets mgmt "FNHOOK_ADMIN_KEY=$(secret FNHOOK_ADMIN_KEY)" "FNHOOK_CONSUL_TOKEN=$(secret CONSUL_TOKEN_MGMT)" \
  "FNHOOK_AMQP_URL=$(amqp mgmt)" "${aws[@]}"
put_secrets handler "FNHOOK_HANDLER_SECRET=$(secret FNHOOK_HANDLER_SECRET)" "FNHOOK_CONSUL_TOKEN=$(secret CONSUL_TOKEN_HANDLER)" \
  "FNHOOK_NOMAD_TOKEN=$htoken" "FNHOOK_AMQP_URL=$(amqp handler)" "${aws[@]}"
put_secrets builder "FNHOOK_CONSUL_TOKEN=$(secret CONSUL_TOKEN_BUILDER)" "FNHOOK_AMQP_URL=$(amqp builder)" "${aws[@]}"
unset htoken aws

# Job variables (no secrets) travel as NOMAD_VAR_* in the environment of `nomad job run`.
export NOMAD_VAR_bin_dir=$BIN
export NOMAD_VAR_build_id=$build_id
export NOMAD_VAR_log_level=${FNHOOK_LOG_LEVEL:-info}
export NOMAD_VAR_modules_dir=$FNHOOK_STATE/modules
export NOMAD_VAR_runner_job_file=$FNHOOK_ROOT/jobs/runner.nomad.hcl
NOMAD_VAR_npm_registry=$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)
export NOMAD_VAR_npm_registry
export NOMAD_VAR_npm_cafile=${NODE_EXTRA_CA_CERTS:-}

for job in mgmt builder handler gateway; do
  out=$("$NOMAD_BIN" job run -detach "$FNHOOK_ROOT/jobs/$job.nomad.hcl" 2>&1) || die "nomad job run jobs/$job.nomad.hcl failed: $out"
done

passing() {
  local s
  for s in gateway mgmt handler builder; do
    consul_api "/v1/health/service/fnhook-$s?passing=true" 2>/dev/null | grep -q '"ServiceID"' || return 1
  done
}
log "waiting for the services to pass their checks in Consul"
if ! wait_for_quiet 120 passing; then
  for s in gateway mgmt handler builder; do
    consul_api "/v1/health/service/fnhook-$s?passing=true" 2>/dev/null | grep -q '"ServiceID"' \
      || log "fnhook-$s is not passing: see 'nomad alloc logs -namespace fnhook -stderr -job fnhook-$s' (NOMAD_ADDR=$NOMAD_ADDR, NOMAD_TOKEN in secrets.env, binary $NOMAD_BIN)"
  done
  diagnose
  die "services did not become healthy"
fi
log "services are up: gateway http://127.0.0.1:8080, mgmt :8081, handler :8082, builder :8083"
