# Shared settings for the fnhook scripts. Sourced, never run.
# Everything built or downloaded is cached per user, outside the clone, keyed by version,
# so a fresh clone on the same machine reuses it.
set -euo pipefail
# Files and folders the scripts make are read by daemons and by runners running as other
# users, and Nomad builds every runner's chroot with the umask it inherits: so the scripts
# and everything they start use 022, whatever the caller's shell had. A step that writes a
# secret narrows it in a subshell of its own, so nothing else inherits that.
umask 022

FNHOOK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FNHOOK_CACHE=${FNHOOK_CACHE:-$HOME/.cache/fnhook}
# Runtime state of the local platform (data dirs, logs, pids, secrets): also outside the clone,
# so that `make down` from any clone finds what `make up` started.
FNHOOK_STATE=${FNHOOK_STATE:-$FNHOOK_CACHE/state}

CONSUL_VERSION=1.21.0
NOMAD_VERSION=1.11.3
NOMAD_API_VERSION=v0.0.0-20260907080526-08ef8f3d26da
VERSITYGW_VERSION=v1.8.0
DYNAMODB_SIM_VERSION=2.9.30

CONSUL_BIN=$FNHOOK_CACHE/consul-$CONSUL_VERSION/consul
NOMAD_BIN=$FNHOOK_CACHE/nomad-$NOMAD_VERSION/nomad
VERSITYGW_BIN=$FNHOOK_CACHE/versitygw-$VERSITYGW_VERSION/versitygw
DYNAMODB_DIR=$FNHOOK_CACHE/dynamodb-local-$DYNAMODB_SIM_VERSION

# Where the local servers listen (all on loopback).
CONSUL_HTTP=127.0.0.1:8500
NOMAD_HTTP=127.0.0.1:4646

# nomad_api PATH [CURL ARGS...]: calls the local Nomad HTTP API (NOMAD_ADDR, else the local
# agent), with NOMAD_TOKEN when set, sent from a pipe so it never appears on a command line.
nomad_api() {
  local path=$1; shift
  if [ -n "${NOMAD_TOKEN:-}" ]; then
    curl -fsS -m 10 -H @<(printf 'X-Nomad-Token: %s\n' "$NOMAD_TOKEN") "$@" "${NOMAD_ADDR:-http://$NOMAD_HTTP}$path"
  else
    curl -fsS -m 10 "$@" "${NOMAD_ADDR:-http://$NOMAD_HTTP}$path"
  fi
}

# secret NAME prints one secret of this state directory's secrets.env (nothing when absent).
secret() { sed -n "s/^$1=//p" "$FNHOOK_STATE/secrets.env" 2>/dev/null; }

# consul_api PATH [CURL ARGS...]: calls the local Consul HTTP API (CONSUL_HTTP_ADDR, else the
# local agent) with CONSUL_HTTP_TOKEN, else the state directory's management token, sent
# from a pipe.
consul_api() {
  local path=$1 token=${CONSUL_HTTP_TOKEN:-}; shift
  [ -n "$token" ] || token=$(secret CONSUL_HTTP_TOKEN)
  curl -fsS -m 10 -H @<(printf 'X-Consul-Token: %s\n' "$token") "$@" "http://${CONSUL_HTTP_ADDR:-$CONSUL_HTTP}$path"
}

# diagnose prints, in a line or two, why calls may fail: the newest failed allocation of an
# fnhook job with Nomad's own message for it, and any handler whose /healthz is not "ok".
diagnose() {
  local out addr h NOMAD_TOKEN=${NOMAD_TOKEN:-}
  [ -n "$NOMAD_TOKEN" ] || NOMAD_TOKEN=$(secret NOMAD_TOKEN)
  out=$(nomad_api '/v1/allocations?namespace=*' 2>/dev/null | jq -r '
    [.[] | select((.JobID | startswith("fnhook-")) and .ClientStatus == "failed")]
    | sort_by(.ModifyTime) | last // empty
    | "allocation \(.ID[0:8]) of \(.JobID) failed: "
      + ([.TaskStates[]?.Events[]? | select(.FailsTask or .Type == "Driver Failure" or .Type == "Setup Failure")
          | (.DisplayMessage // .DriverError // .Message)] | last // "no task event says why")' 2>/dev/null) || true
  [ -z "$out" ] || log "nomad: ${out:0:400}"
  for addr in $(consul_api /v1/health/service/fnhook-handler 2>/dev/null \
    | jq -r '.[] | "\(.Service.Address):\(.Service.Port)"' 2>/dev/null); do
    h=$(curl -sS -m 5 "http://$addr/healthz" 2>/dev/null) || { log "handler $addr: /healthz does not answer"; continue; }
    [ "$(jq -r '.status' <<<"$h" 2>/dev/null)" = ok ] || log "handler $addr: $(jq -r '.status + (if .reason then ": " + .reason else "" end)' <<<"$h" 2>/dev/null | cut -c1-400)"
  done
}

log() { printf '[fnhook] %s\n' "$*" >&2; }
die() { printf '[fnhook] error: %s\n' "$*" >&2; exit 1; }

# wait_for DESC SECONDS CMD...: runs CMD until it succeeds or SECONDS pass.
wait_for() {
  local desc=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then die "$desc did not come up within ${secs}s"; fi
    sleep 0.5
  done
}

# wait_for_quiet SECONDS CMD...: like wait_for, but returns 1 instead of dying.
wait_for_quiet() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS >= end)) && return 1
    sleep 0.5
  done
}
