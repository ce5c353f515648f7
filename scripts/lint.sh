#!/usr/bin/env bash
# gofmt and go vet over every module of the workspace.
source "$(dirname "$0")/common.sh"
cd "$FNHOOK_ROOT"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$unformatted" ] || die "gofmt would change: $unformatted"
go vet github.com/fnhook/fnhook/...
node --check services/handler/runner/*.js
log "lint ok"
