#!/usr/bin/env bash
# Installs the real servers fnhook needs into the per-user cache (or with apt-get), skipping
# whatever is there already. Usage: scripts/install.sh [consul|nomad|s3|dynamodb|apt|users]...
source "$(dirname "$0")/common.sh"

# build_from_module MODULE VERSION OUT: builds a Go main package whose go.mod carries
# replace lines into its own tree (which `go install` refuses), from the module proxy.
build_from_module() {
  local mod=$1 ver=$2 out=$3; shift 3
  local dir tmp
  dir=$(GOFLAGS=-mod=mod go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || die "go mod download $mod@$ver gave no directory"
  tmp=$(mktemp -d)
  cp -r "$dir/." "$tmp/src"
  chmod -R u+w "$tmp/src"
  (cd "$tmp/src" && "$@" && CGO_ENABLED=${CGO:-0} GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp" .) \
    || { rm -rf "$tmp"; die "building $mod@$ver failed"; }
  mv "$out.tmp" "$out"
  rm -rf "$tmp"
}

consul_edit() {
  go mod edit -dropreplace github.com/hashicorp/consul/api \
    -dropreplace github.com/hashicorp/consul/envoyextensions \
    -dropreplace github.com/hashicorp/consul/proto-public \
    -dropreplace github.com/hashicorp/consul/sdk \
    -dropreplace github.com/hashicorp/consul/troubleshoot
}

nomad_edit() {
  go mod edit -dropreplace github.com/hashicorp/nomad/api \
    -require "github.com/hashicorp/nomad/api@$NOMAD_API_VERSION"
}

install_consul() {
  [ -x "$CONSUL_BIN" ] && return 0
  log "building consul $CONSUL_VERSION (first time only, several minutes)"
  mkdir -p "$(dirname "$CONSUL_BIN")"
  build_from_module github.com/hashicorp/consul "v$CONSUL_VERSION" "$CONSUL_BIN" consul_edit
}

install_nomad() {
  [ -x "$NOMAD_BIN" ] && return 0
  log "building nomad $NOMAD_VERSION (first time only, several minutes)"
  mkdir -p "$(dirname "$NOMAD_BIN")"
  # The exec driver needs cgo-free builds to be fine; nomad builds with CGO for some
  # platform bits, so keep cgo on (gcc is on the machine).
  CGO=1 build_from_module github.com/hashicorp/nomad "v$NOMAD_VERSION" "$NOMAD_BIN" nomad_edit
}

install_s3() {
  [ -x "$VERSITYGW_BIN" ] && return 0
  log "installing versitygw $VERSITYGW_VERSION"
  GOBIN=$(dirname "$VERSITYGW_BIN") go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
}

install_dynamodb() {
  [ -f "$DYNAMODB_DIR/DynamoDBLocal.jar" ] && return 0
  log "fetching DynamoDB Local (amplify-dynamodb-simulator $DYNAMODB_SIM_VERSION)"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "amplify-dynamodb-simulator@$DYNAMODB_SIM_VERSION" >/dev/null && tar xzf ./*.tgz)
  rm -rf "$DYNAMODB_DIR.tmp"
  mv "$tmp/package/emulator" "$DYNAMODB_DIR.tmp"
  mv "$DYNAMODB_DIR.tmp" "$DYNAMODB_DIR"
  rm -rf "$tmp"
}

install_apt() {
  local missing=()
  command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v jq >/dev/null || missing+=(jq)
  command -v ss >/dev/null || missing+=(iproute2)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system instance; we run our own, detached, so stop theirs.
  if command -v service >/dev/null; then service rabbitmq-server stop >/dev/null 2>&1 || true; fi
}

# install_users makes the account npm install scripts run as in the builder's sandbox: its
# own user and group, shared with nothing else (runners run as nobody).
install_users() {
  id -u fnhook-build >/dev/null 2>&1 && return 0
  log "adding the system user fnhook-build (npm installs run as it)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fnhook-build
}

mkdir -p "$FNHOOK_CACHE"
# One installer at a time per cache (tests may start the servers from several processes).
exec 9>"$FNHOOK_CACHE/install.lock"
flock 9
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(apt users dynamodb s3 consul nomad)
for t in "${targets[@]}"; do "install_$t"; done
