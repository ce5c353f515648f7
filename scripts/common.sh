# Shared settings for the fnhook scripts. Sourced, never run.
# Everything built or downloaded is cached per user, outside the clone, keyed by version,
# so a fresh clone on the same machine reuses it.
set -euo pipefail

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
