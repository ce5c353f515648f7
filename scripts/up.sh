#!/usr/bin/env bash
# `make up`: brings up the infrastructure and the four services as Nomad jobs (from jobs/),
# waits until Consul lists them all as passing, then deploys and calls a sample function.
# Idempotent: a second run changes nothing and takes seconds.
source "$(dirname "$0")/common.sh"

"$FNHOOK_ROOT/scripts/infra.sh" up
"$FNHOOK_ROOT/scripts/deploy.sh"
"$FNHOOK_ROOT/scripts/sample.sh"
