#!/usr/bin/env bash
# Starts, checks and stops the real servers fnhook runs on, all on loopback:
# Consul, Nomad (server+client, exec and raw_exec drivers, bridge networking), RabbitMQ,
# DynamoDB Local and an S3 server (versitygw).
#   scripts/infra.sh up       install what is missing, start what is not running, wait
#   scripts/infra.sh down     stop everything and remove what the agents left behind
#   scripts/infra.sh status   one line per server
#   scripts/infra.sh env      print the FNHOOK_* variables for clients (no secrets)
#   scripts/infra.sh start consul|nomad|rabbit|dynamo|s3...   start only these
source "$(dirname "$0")/common.sh"

CONSUL_HTTP=127.0.0.1:8500
NOMAD_HTTP=127.0.0.1:4646
DYNAMODB_PORT=8000
S3_PORT=7070
NOMAD_DATA=$FNHOOK_STATE/nomad/data
MODULES_DIR=$FNHOOK_STATE/modules
RUNNER_DIR=$FNHOOK_STATE/runner
SECRETS=$FNHOOK_STATE/secrets.env

mkdir -p "$FNHOOK_STATE"/{logs,run}

pidfile() { echo "$FNHOOK_STATE/run/$1.pid"; }
running() { local p; p=$(cat "$(pidfile "$1")" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

# start NAME CMD...: starts CMD detached with a scrubbed environment plus what the caller
# put in START_ENV, logs to logs/NAME.log, records its pid.
start() {
  local name=$1; shift
  # shellcheck disable=SC2086
  setsid env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME" ${START_ENV:-} \
    "$@" >>"$FNHOOK_STATE/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$(pidfile "$name")"
}

consul_ok() { curl -fs "http://$CONSUL_HTTP/v1/status/leader" | grep -q '"'; }
nomad_ok() { curl -fs "http://$NOMAD_HTTP/v1/agent/health" >/dev/null && curl -fsS "http://$NOMAD_HTTP/v1/nodes" | grep -q '"Status":"ready"'; }
rabbit_ok() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && timeout 15 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
dynamo_ok() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DYNAMODB_PORT" | grep -q 400; }
s3_ok() { curl -s -o /dev/null "http://127.0.0.1:$S3_PORT"; }

secrets() {
  if [ ! -f "$SECRETS" ]; then
    umask 077
    cat >"$SECRETS" <<EOS
FNHOOK_ADMIN_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
FNHOOK_HANDLER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
FNHOOK_AWS_ACCESS_KEY_ID=fnhook$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
FNHOOK_AWS_SECRET_ACCESS_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
EOS
  fi
}

up_consul() {
  consul_ok && return 0
  log "starting consul"
  start consul "$CONSUL_BIN" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -log-level warn
  wait_for consul 60 consul_ok
}

# chroot_env lists what a runner's chroot holds: node, the libraries it links (each real
# file placed where the loader expects it, since symlinks are copied as links), the loader,
# and a few files of /etc. Nothing else: no shell, no /usr.
chroot_env() {
  local node real lib
  node=$(readlink -f "$(command -v node)")
  printf '      "%s" = "/usr/bin/node"\n' "$node"
  for lib in $(ldd "$node" | grep -o '/[^ ]*'); do
    real=$(readlink -f "$lib")
    printf '      "%s" = "%s"\n' "$real" "$lib"
  done
  for f in /etc/passwd /etc/group /etc/hosts /etc/resolv.conf /etc/ssl/certs/ca-certificates.crt; do
    [ -e "$f" ] && printf '      "%s" = "%s"\n' "$(readlink -f "$f")" "$f"
  done
}

nomad_config() {
  mkdir -p "$NOMAD_DATA" "$MODULES_DIR"
  chmod 0755 "$MODULES_DIR" "$FNHOOK_STATE"
  cat >"$FNHOOK_STATE/nomad/agent.hcl" <<EOC
# Written by scripts/infra.sh: the single-node Nomad agent of a local fnhook.
data_dir   = "$NOMAD_DATA"
bind_addr  = "127.0.0.1"
log_level  = "WARN"
advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}
server {
  enabled          = true
  bootstrap_expect = 1
}
client {
  enabled           = true
  network_interface = "lo"
  cni_path          = "/usr/lib/cni"
  # Map runner ports on the host address (127.0.0.1) only, not on every local address.
  bind_wildcard_default_host_network = false
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
  chroot_env {
$(chroot_env)
  }
  host_volume "fnhook-modules" {
    path      = "$MODULES_DIR"
    read_only = true
  }
  host_volume "fnhook-runner" {
    path      = "$RUNNER_DIR"
    read_only = true
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
consul {
  address = "$CONSUL_HTTP"
}
EOC
}

up_nomad() {
  if nomad_ok; then isolate_runners; return 0; fi
  if running nomad; then
    wait_for nomad 60 nomad_ok
    return 0
  fi
  clean_nomad_leftovers
  log "starting nomad"
  nomad_config
  # The agent's environment is handed to every exec task: start it with nothing in it.
  isolate_runners
  start nomad "$NOMAD_BIN" agent -config "$FNHOOK_STATE/nomad/agent.hcl"
  wait_for nomad 90 nomad_ok
}

up_rabbit() {
  rabbit_ok && return 0
  log "starting rabbitmq"
  START_ENV="HOME=/var/lib/rabbitmq RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1" start rabbitmq rabbitmq-server
  wait_for rabbitmq 120 rabbit_ok
}

up_dynamo() {
  dynamo_ok && return 0
  log "starting dynamodb local"
  mkdir -p "$FNHOOK_STATE/dynamodb"
  (cd "$DYNAMODB_DIR" && start dynamodb java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -sharedDb -dbPath "$FNHOOK_STATE/dynamodb" -port "$DYNAMODB_PORT")
  wait_for "dynamodb local" 60 dynamo_ok
}

up_s3() {
  s3_ok && return 0
  log "starting s3 (versitygw)"
  mkdir -p "$FNHOOK_STATE/s3"
  # shellcheck disable=SC1090
  source "$SECRETS"
  START_ENV="ROOT_ACCESS_KEY=$FNHOOK_AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$FNHOOK_AWS_SECRET_ACCESS_KEY" \
    start s3 "$VERSITYGW_BIN" --port "127.0.0.1:$S3_PORT" posix "$FNHOOK_STATE/s3"
  wait_for s3 30 s3_ok
}

# Runner isolation on the host: a runner (traffic entering from the nomad bridge) may not open
# a connection to any address of the host itself (Consul, Nomad, RabbitMQ, DynamoDB, S3, the
# services, and the mapped ports of other runners, since DNAT comes after this point), nor to
# another runner on the bridge. Answers to connections the host opened still flow. The rules
# live in the mangle table, which neither Nomad nor the CNI plugins touch, so they stay first.
ISOLATION_RULES=(
  "PREROUTING -i nomad -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j DROP"
  "FORWARD -i nomad -o nomad -m conntrack --ctstate NEW -j DROP"
)

isolate_runners() {
  local r
  for r in "${ISOLATION_RULES[@]}"; do
    # shellcheck disable=SC2086
    iptables -t mangle -C $r 2>/dev/null || iptables -t mangle -I ${r%% *} 1 ${r#* } \
      || die "could not install the runner isolation rule: $r"
  done
}

unisolate_runners() {
  local r
  for r in "${ISOLATION_RULES[@]}"; do
    # shellcheck disable=SC2086
    while iptables -t mangle -D $r 2>/dev/null; do :; done
  done
}

# Leftovers of a Nomad agent that was killed rather than stopped: executors and their
# tasks, mounts under the data dir, alloc network namespaces, CNI iptables chains, bridge.
clean_nomad_leftovers() {
  local p
  for p in $(pgrep -f "$NOMAD_BIN" || true); do kill -9 "$p" 2>/dev/null || true; done
  for p in $(pgrep -f "^/usr/bin/node /runner/" || true); do kill -9 "$p" 2>/dev/null || true; done
  if [ -d "$NOMAD_DATA" ]; then
    { grep -o " $NOMAD_DATA[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  if [ -d /var/run/netns ]; then
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
      [[ $ns =~ ^[0-9a-f]{8}-[0-9a-f]{4}- ]] && ip netns delete "$ns" 2>/dev/null || true
    done
  fi
  if command -v iptables >/dev/null; then
    local table chain rule
    for table in filter nat mangle; do
      # First every rule that jumps to a chain of theirs, then the chains themselves.
      for chain in $(iptables -t $table -S 2>/dev/null | awk '/^-N (CNI-|NOMAD-)/{print $2}' || true); do
        while read -r rule; do
          [ -n "$rule" ] || continue
          # iptables -S quotes comments the way a shell does: let the shell split the rule.
          eval "iptables -t $table ${rule/#-A/-D}" 2>/dev/null || true
        done < <(iptables -t $table -S 2>/dev/null | grep -E -- "-j $chain( |\$)" || true)
      done
      for chain in $(iptables -t $table -S 2>/dev/null | awk '/^-N (CNI-|NOMAD-)/{print $2}' || true); do
        iptables -t $table -F "$chain" 2>/dev/null || true
      done
      for chain in $(iptables -t $table -S 2>/dev/null | awk '/^-N (CNI-|NOMAD-)/{print $2}' || true); do
        iptables -t $table -X "$chain" 2>/dev/null || true
      done
    done
  fi
  ip link delete nomad 2>/dev/null || true
  unisolate_runners
  rm -rf "$NOMAD_DATA"
}

down_nomad() {
  if nomad_ok; then
    local jobs
    jobs=$(curl -fsS "http://$NOMAD_HTTP/v1/jobs" | grep -o '"ID":"[^"]*"' | cut -d'"' -f4 || true)
    for j in $jobs; do curl -fsS -X DELETE "http://$NOMAD_HTTP/v1/job/$j" >/dev/null || true; done
    # Wait until every allocation is no longer running, then purge.
    local end=$((SECONDS + 60))
    while ((SECONDS < end)) && curl -fsS "http://$NOMAD_HTTP/v1/allocations" | grep -q '"ClientStatus":"\(running\|pending\)"'; do
      sleep 0.5
    done
    for j in $jobs; do curl -fsS -X DELETE "http://$NOMAD_HTTP/v1/job/$j?purge=true" >/dev/null || true; done
  fi
  stop_pid nomad 20
  clean_nomad_leftovers
}

stop_pid() {
  local name=$1 secs=${2:-10} p
  p=$(cat "$(pidfile "$name")" 2>/dev/null) || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    local end=$((SECONDS + secs))
    while kill -0 "$p" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$name")"
}

# sync_runner copies the runner program of this clone to where the fnhook-runner host volume
# points, in place (runners that are running keep their bind mount of the folder).
sync_runner() {
  mkdir -p "$RUNNER_DIR"
  local f
  for f in "$FNHOOK_ROOT"/services/handler/runner/*.js "$FNHOOK_ROOT"/services/handler/runner/package.json; do
    cmp -s "$f" "$RUNNER_DIR/$(basename "$f")" || install -m 0644 "$f" "$RUNNER_DIR/$(basename "$f")"
  done
  chmod 0755 "$RUNNER_DIR"
}

cmd_up() {
  exec 8>"$FNHOOK_STATE/up.lock"
  flock 8
  "$FNHOOK_ROOT/scripts/install.sh"
  secrets
  sync_runner
  # Independent servers start in parallel; Nomad needs Consul.
  up_rabbit & local r=$!
  up_dynamo & local d=$!
  up_s3 & local s=$!
  up_consul
  up_nomad
  wait $r || die "rabbitmq failed to start (see $FNHOOK_STATE/logs/rabbitmq.log)"
  wait $d || die "dynamodb local failed to start (see $FNHOOK_STATE/logs/dynamodb.log)"
  wait $s || die "s3 failed to start (see $FNHOOK_STATE/logs/s3.log)"
  log "infrastructure is up (state in $FNHOOK_STATE)"
}

cmd_down() {
  down_nomad
  stop_pid consul
  stop_pid dynamodb
  stop_pid s3
  if rabbit_ok 2>/dev/null; then rabbitmqctl -q stop >/dev/null 2>&1 || true; fi
  stop_pid rabbitmq
  # RabbitMQ's port mapper daemon outlives the broker; it exits once no node is registered.
  for epmd in /usr/lib/erlang/bin/epmd /usr/lib/erlang/erts-*/bin/epmd; do
    [ -x "$epmd" ] && { "$epmd" -kill >/dev/null 2>&1 || true; break; }
  done
  log "infrastructure is down"
}

cmd_status() {
  local n
  for n in consul nomad rabbit dynamo s3; do
    if "${n}_ok" >/dev/null 2>&1; then echo "$n: up"; else echo "$n: down"; fi
  done
}

cmd_env() {
  cat <<EOE
FNHOOK_CONSUL_ADDR=$CONSUL_HTTP
FNHOOK_NOMAD_ADDR=http://$NOMAD_HTTP
FNHOOK_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
FNHOOK_DYNAMODB_ENDPOINT=http://127.0.0.1:$DYNAMODB_PORT
FNHOOK_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
FNHOOK_MODULES_DIR=$MODULES_DIR
FNHOOK_SECRETS_FILE=$SECRETS
EOE
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  sync-runner) sync_runner ;;
  start) secrets; sync_runner; shift; for n in "$@"; do "up_$n"; done ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
