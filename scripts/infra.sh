#!/usr/bin/env bash
# Starts, checks and stops the real servers fnhook runs on, all on loopback:
# Consul, Nomad (server+client, exec and raw_exec drivers, bridge networking), RabbitMQ,
# DynamoDB Local and an S3 server (versitygw).
#   scripts/infra.sh up       install what is missing, start what is not running, wait
#   scripts/infra.sh down     stop everything and remove what the agents left behind
#   scripts/infra.sh purge    down, then delete the state directory and all its data
#   scripts/infra.sh status   one line per server
#   scripts/infra.sh env      print the FNHOOK_* variables for clients (no secrets)
#   scripts/infra.sh start consul|nomad|rabbit|dynamo|s3...   start only these
source "$(dirname "$0")/common.sh"

DYNAMODB_PORT=8000
S3_PORT=7070
NOMAD_DATA=$FNHOOK_STATE/nomad/data
MODULES_DIR=$FNHOOK_STATE/modules
RUNNER_DIR=$FNHOOK_STATE/runner
SECRETS=$FNHOOK_STATE/secrets.env
# RabbitMQ runs as its own user, which cannot enter a state directory under root's home: its
# data lives under its own home, in a folder named after this state directory.
RABBIT_DATA=/var/lib/rabbitmq/fnhook-$(printf '%s' "$FNHOOK_STATE" | sha256sum | cut -c1-12)

mkdir -p "$FNHOOK_STATE"/{logs,run}

pidfile() { echo "$FNHOOK_STATE/run/$1.pid"; }
# running NAME: the process in NAME's pid file is alive (a killed one may linger as a zombie
# until the host's init reaps it: that one is dead).
running() {
  local p st
  p=$(cat "$(pidfile "$1")" 2>/dev/null) && kill -0 "$p" 2>/dev/null || return 1
  st=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1)
  [ -n "$st" ] && [ "$st" != Z ]
}

# start NAME CMD...: starts CMD detached with a scrubbed environment plus what the caller
# put in START_ENV and umask 022 (Nomad builds runner chroots with its own umask), logs to
# logs/NAME.log, records its pid.
start() {
  local name=$1; shift
  # shellcheck disable=SC2086
  (umask 022 && exec setsid env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME" ${START_ENV:-} \
    "$@" >>"$FNHOOK_STATE/logs/$name.log" 2>&1 </dev/null 8>&- 9>&-) &
  echo $! >"$(pidfile "$name")"
}

# claim_port NAME PORT: stops the script when something else listens on PORT, naming the
# process: a server left by another state directory would hold other data and credentials.
claim_port() {
  local name=$1 port=$2 line pid cmd
  line=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -1)
  [ -n "$line" ] || return 0
  pid=$(grep -o 'pid=[0-9]*' <<<"$line" | head -1 | cut -d= -f2)
  cmd=$( (tr '\0' ' ' <"/proc/$pid/cmdline") 2>/dev/null | cut -c1-160)
  die "port $port ($name) is held by pid ${pid:-?} (${cmd:-unknown}), which was not started for this state directory ($FNHOOK_STATE). Stop it (if it is fnhook's: FNHOOK_STATE=<its state directory> make down) or free the port."
}

consul_ok() { curl -fs "http://$CONSUL_HTTP/v1/status/leader" | grep -q '"'; }
nomad_ok() { curl -fs "http://$NOMAD_HTTP/v1/agent/health" >/dev/null; }
# nomad_ready: the local client node is ready (asked with the management token).
nomad_ready() { NOMAD_TOKEN=$(secret NOMAD_TOKEN) nomad_api /v1/nodes | grep -q '"Status":"ready"'; }
rabbit_ok() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && timeout 15 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
dynamo_ok() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DYNAMODB_PORT" | grep -q 400; }
s3_ok() { curl -s -o /dev/null "http://127.0.0.1:$S3_PORT"; }

# secrets writes this state directory's secrets, adding any that an older file lacks. Only
# this step needs umask 077, so it runs in a subshell: nothing started later inherits it.
#   FNHOOK_*           the platform's own (admin key, handler secret, S3 keys); FNHOOK_AMQP_URL
#                      is the broker's admin account, for the operator and the tests
#   NOMAD_TOKEN        Nomad's management token (the bootstrap secret)
#   CONSUL_HTTP_TOKEN  Consul's management token
#   CONSUL_TOKEN_<X>   the Consul token of the Nomad agent and of each service
#   RABBIT_PASSWORD_<X> the broker password of each service
secrets() {
  (
    umask 077
    touch "$SECRETS"
    hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    uuid() { cat /proc/sys/kernel/random/uuid; }
    add() { grep -q "^$1=" "$SECRETS" || printf '%s=%s\n' "$1" "$2" >>"$SECRETS"; }
    add FNHOOK_ADMIN_KEY "$(hex 32)"
    add FNHOOK_HANDLER_SECRET "$(hex 32)"
    add FNHOOK_AWS_ACCESS_KEY_ID "fnhook$(hex 6)"
    add FNHOOK_AWS_SECRET_ACCESS_KEY "$(hex 24)"
    add NOMAD_TOKEN "$(uuid)"
    add CONSUL_HTTP_TOKEN "$(uuid)"
    local x
    for x in NOMAD GATEWAY MGMT HANDLER BUILDER; do add "CONSUL_TOKEN_$x" "$(uuid)"; done
    for x in ADMIN GATEWAY MGMT HANDLER BUILDER; do add "RABBIT_PASSWORD_$x" "$(hex 18)"; done
    add FNHOOK_AMQP_URL "amqp://fnhook-admin:$(secret RABBIT_PASSWORD_ADMIN)@127.0.0.1:5672/"
  )
}

up_consul() {
  if running consul; then wait_for consul 60 consul_ok; consul_acl; return 0; fi
  claim_port consul 8500
  log "starting consul"
  mkdir -p "$FNHOOK_STATE/consul"
  chmod 0700 "$FNHOOK_STATE/consul"
  # ACLs deny by default: every service, the Nomad agent and the operator use a token.
  (umask 077 && cat >"$FNHOOK_STATE/consul/acl.hcl" <<EOC
acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = false
  tokens {
    initial_management = "$(secret CONSUL_HTTP_TOKEN)"
    agent              = "$(secret CONSUL_HTTP_TOKEN)"
  }
}
EOC
  )
  start consul "$CONSUL_BIN" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -log-level warn \
    -config-file "$FNHOOK_STATE/consul/acl.hcl"
  wait_for consul 60 consul_ok
  consul_acl
}

# consul_token NAME SECRET RULES: makes policy NAME with RULES and a token with SECRET
# holding it, unless they exist (a dev agent keeps them in memory only: its restart loses
# them, so every `make up` checks).
consul_token() {
  local name=$1 secret=$2 rules=$3
  if ! consul_api "/v1/acl/policy/name/$name" >/dev/null 2>&1; then
    jq -n --arg n "$name" --arg r "$rules" '{Name: $n, Rules: $r}' | consul_api /v1/acl/policy -X PUT --data-binary @- >/dev/null \
      || die "could not create the Consul policy $name"
  fi
  if ! curl -fsS -m 10 -H @<(printf 'X-Consul-Token: %s\n' "$secret") "http://$CONSUL_HTTP/v1/acl/token/self" >/dev/null 2>&1; then
    jq -n --arg n "$name" --arg s "$secret" '{Description: $n, SecretID: $s, Policies: [{Name: $n}]}' \
      | consul_api /v1/acl/token -X PUT --data-binary @- >/dev/null || die "could not create the Consul token $name"
  fi
}

# consul_acl gives the Nomad agent and each service the least it needs: the agent registers
# its own services and its node; a service registers itself and reads the catalog.
consul_acl() {
  wait_for "consul acl" 30 consul_api /v1/acl/token/self
  consul_token fnhook-nomad "$(secret CONSUL_TOKEN_NOMAD)" \
    'agent_prefix "" { policy = "read" } node_prefix "" { policy = "write" } service_prefix "" { policy = "write" }'
  local s
  for s in gateway mgmt handler builder; do
    consul_token "fnhook-$s" "$(secret "CONSUL_TOKEN_${s^^}")" \
      "service \"fnhook-$s\" { policy = \"write\" } service_prefix \"\" { policy = \"read\" } node_prefix \"\" { policy = \"read\" } agent_prefix \"\" { policy = \"read\" }"
  done
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
  # The agent's config holds its Consul token; its data dir holds rendered task secrets.
  chmod 0700 "$FNHOOK_STATE/nomad"
  (umask 077 && cat >"$FNHOOK_STATE/nomad/agent.hcl") <<EOC
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
  # Runners reserve what they use (memory) and are limited by memory_max: a node then holds
  # as many runners as its memory allows, not as many as their limits add up to.
  default_scheduler_config {
    memory_oversubscription_enabled = true
  }
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
acl {
  enabled = true
}
consul {
  address = "$CONSUL_HTTP"
  token   = "$(secret CONSUL_TOKEN_NOMAD)"
}
EOC
}

up_nomad() {
  if running nomad; then
    wait_for nomad 60 nomad_ok
    isolate_runners
    nomad_acl
    wait_for "the nomad client node" 60 nomad_ready
    return 0
  fi
  claim_port nomad 4646
  clean_nomad_leftovers
  log "starting nomad"
  nomad_config
  # The agent's environment is handed to every exec task: start it with nothing in it.
  isolate_runners
  start nomad "$NOMAD_BIN" agent -config "$FNHOOK_STATE/nomad/agent.hcl"
  wait_for nomad 90 nomad_ok
  nomad_acl
  wait_for "the nomad client node" 60 nomad_ready
}

# nomad_acl bootstraps Nomad's ACLs with this state directory's NOMAD_TOKEN (a new data dir
# starts unbootstrapped), then makes what the services use: the namespace "fnhook" for the
# services' jobs and their Variables, the namespace "fnhook-runners" whose jobs may use the
# exec driver only, and the handler's policy, which reaches runner jobs and nothing else.
nomad_acl() {
  local out
  if ! NOMAD_TOKEN=$(secret NOMAD_TOKEN) nomad_api /v1/acl/token/self >/dev/null 2>&1; then
    # The answer holds the token: keep only its status (a failure's body holds no secret).
    out=$(jq -n --arg s "$(secret NOMAD_TOKEN)" '{BootstrapSecret: $s}' \
      | curl -sS -m 30 -o /dev/null -w '%{http_code}' -X POST --data-binary @- "http://$NOMAD_HTTP/v1/acl/bootstrap" 2>&1) || true
    [ "$out" = 200 ] || die "nomad acl bootstrap answered ${out:-nothing}: was this data dir bootstrapped with another token? (make down cleans it)"
    NOMAD_TOKEN=$(secret NOMAD_TOKEN) wait_for "nomad acl bootstrap" 30 nomad_api /v1/acl/token/self
  fi
  local NOMAD_TOKEN; NOMAD_TOKEN=$(secret NOMAD_TOKEN)
  jq -n '{Name: "fnhook", Description: "fnhook services and their Variables"}' \
    | nomad_api /v1/namespace/fnhook -X POST --data-binary @- >/dev/null || die "could not create the Nomad namespace fnhook"
  jq -n '{Name: "fnhook-runners", Description: "fnhook runners (tenant code): exec only",
          Capabilities: {EnabledTaskDrivers: ["exec"]}}' \
    | nomad_api /v1/namespace/fnhook-runners -X POST --data-binary @- >/dev/null || die "could not create the Nomad namespace fnhook-runners"
  jq -n --arg r 'namespace "fnhook-runners" {
  capabilities = ["submit-job", "read-job", "list-jobs", "parse-job"]
}
host_volume "fnhook-modules" {
  capabilities = ["mount-readonly"]
}
host_volume "fnhook-runner" {
  capabilities = ["mount-readonly"]
}
node {
  policy = "read"
}
agent {
  policy = "read"
}' '{Name: "fnhook-handler", Description: "the handler: runner jobs only", Rules: $r}' \
    | nomad_api /v1/acl/policy/fnhook-handler -X POST --data-binary @- >/dev/null || die "could not write the Nomad policy fnhook-handler"
}

up_rabbit() {
  if running rabbitmq; then wait_for rabbitmq 120 rabbit_ok; rabbit_users; return 0; fi
  claim_port rabbitmq 5672
  log "starting rabbitmq"
  install -d -o rabbitmq -g rabbitmq -m 0750 "$RABBIT_DATA"
  START_ENV="HOME=/var/lib/rabbitmq RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE=$RABBIT_DATA" \
    start rabbitmq rabbitmq-server
  wait_for rabbitmq 120 rabbit_ok
  rabbit_users
}

# rabbit_users gives each service a broker account of its own, limited to fnhook's exchange
# and queues (and the queues the broker names), plus an admin account for the operator and
# the tests, and removes guest. Passwords travel to the broker as salted hashes on stdin.
rabbit_users() {
  local defs
  defs=$(for x in ADMIN GATEWAY MGMT HANDLER BUILDER; do printf '%s %s\n' "$x" "$(secret "RABBIT_PASSWORD_$x")"; done | node -e '
    const crypto = require("crypto");
    const lines = require("fs").readFileSync(0, "utf8").trim().split("\n");
    const only = "^(fnhook[.-].*|amq\\.gen-.*|amq\\.default)$";
    const users = [], permissions = [];
    for (const line of lines) {
      const [who, password] = line.split(" ");
      const name = "fnhook-" + who.toLowerCase();
      const salt = crypto.randomBytes(4);
      const hash = crypto.createHash("sha256").update(Buffer.concat([salt, Buffer.from(password)])).digest();
      const admin = who === "ADMIN";
      users.push({ name, password_hash: Buffer.concat([salt, hash]).toString("base64"),
        hashing_algorithm: "rabbit_password_hashing_sha256", tags: admin ? ["administrator"] : [] });
      const re = admin ? ".*" : only;
      permissions.push({ user: name, vhost: "/", configure: re, write: re, read: re });
    }
    process.stdout.write(JSON.stringify({ users, permissions }));')
  printf '%s' "$defs" | rabbitmqctl -q import_definitions --format json >/dev/null \
    || die "could not create the RabbitMQ accounts"
  # The import is asynchronous.
  wait_for "the RabbitMQ accounts" 30 sh -c 'rabbitmqctl -q list_users | grep -q "^fnhook-builder\b"'
  if rabbitmqctl -q list_users 2>/dev/null | grep -q '^guest\b'; then
    rabbitmqctl -q delete_user guest >/dev/null || die "could not remove RabbitMQ's guest account"
  fi
}

up_dynamo() {
  if running dynamodb; then wait_for "dynamodb local" 60 dynamo_ok; return 0; fi
  claim_port dynamodb "$DYNAMODB_PORT"
  log "starting dynamodb local"
  mkdir -p "$FNHOOK_STATE/dynamodb"
  (cd "$DYNAMODB_DIR" && start dynamodb java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -sharedDb -dbPath "$FNHOOK_STATE/dynamodb" -port "$DYNAMODB_PORT")
  wait_for "dynamodb local" 60 dynamo_ok
}

up_s3() {
  if running s3; then wait_for s3 30 s3_ok; return 0; fi
  claim_port s3 "$S3_PORT"
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

# Leftovers of this state directory's Nomad agent after it was killed rather than stopped:
# its processes (executors, log shippers, runner tasks), mounts under its data dir, and the
# network namespaces, iptables rules and CNI leases of its allocations. Only what is this
# agent's: another agent on the host (another state directory, a cluster test) keeps its own.
clean_nomad_leftovers() {
  local ids=() d p
  if [ -d "$NOMAD_DATA/alloc" ]; then
    for d in "$NOMAD_DATA"/alloc/*/; do [ -d "$d" ] && ids+=("$(basename "$d")"); done
  fi
  for p in $(agent_pids "${ids[@]}"); do kill -9 "$p" 2>/dev/null || true; done
  if [ -d "$NOMAD_DATA" ]; then
    { grep -o " $NOMAD_DATA/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  if [ ${#ids[@]} -gt 0 ]; then
    for d in "${ids[@]}"; do
      ip netns delete "$d" 2>/dev/null || true
      rmdir /sys/fs/cgroup/*/nomad/"$d".* 2>/dev/null || true
    done
    remove_alloc_rules "${ids[@]}"
  fi
  # What the bridge mode of any agent shares: gone only when no Nomad agent is left.
  if ! pgrep -f '(^|/)nomad agent' >/dev/null; then
    ip link delete nomad 2>/dev/null || true
    if command -v iptables >/dev/null; then
      # Nomad's own chain; the CNI plugins' shared, empty chains (CNI-FORWARD, CNI-HOSTPORT-*)
      # may serve another CNI user of the host and are left.
      local chain num
      for chain in $(iptables -S 2>/dev/null | awk '/^-[NP] /{print $2}'); do
        while read -r num; do iptables -D "$chain" "$num" 2>/dev/null || true; done \
          < <(iptables -L "$chain" -n --line-numbers 2>/dev/null | awk '$2 == "NOMAD-ADMIN" {print $1}' | sort -rn)
      done
      iptables -F NOMAD-ADMIN 2>/dev/null && iptables -X NOMAD-ADMIN 2>/dev/null || true
    fi
    unisolate_runners
  fi
  rm -rf "$NOMAD_DATA"
}

# agent_pids ID... prints the processes of this state directory's Nomad agent: the agent
# (its config is here), its plugins (executors, log shippers: files open under the data dir)
# and the tasks of its allocations (in the cgroups Nomad named after the allocation ids; a
# task's root and working folder are in a mount namespace of its own, so they do not tell).
agent_pids() {
  local p exe pattern=""
  [ $# -gt 0 ] && pattern="/nomad/($(IFS='|'; echo "$*"))\."
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    if [ -n "$pattern" ] && grep -qE "$pattern" "/proc/$p/cgroup" 2>/dev/null; then
      echo "$p"
      continue
    fi
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    [ "$exe" = "$NOMAD_BIN" ] || continue
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$FNHOOK_STATE/" \
      || ls -l "/proc/$p/fd" 2>/dev/null | grep -qF "$NOMAD_DATA/"; then
      echo "$p"
    fi
  done
}

# remove_alloc_rules ID...: deletes the iptables rules the CNI plugins made for these
# allocations (their comments name the allocation id; the firewall's name its address, read
# from the CNI lease), then the per-allocation chains they jumped to. Rules are deleted by
# number, highest first, so no rule text is ever re-parsed by a shell.
remove_alloc_rules() {
  command -v iptables >/dev/null || return 0
  local pattern lease ip table chain num target
  pattern=$(IFS='|'; echo "$*")
  for lease in /var/lib/cni/networks/nomad/*; do
    [ -f "$lease" ] && grep -qE "$pattern" "$lease" 2>/dev/null || continue
    # In `iptables -L -n` a host address stands alone in its column.
    ip=${lease##*/}
    pattern="$pattern|[[:space:]]${ip//./\\.}([[:space:]]|\$)"
    rm -f "$lease"
  done
  for table in filter nat mangle; do
    local jumped=()
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-[NP] /{print $2}'); do
      while read -r num target; do
        [[ $target == CNI-* ]] && jumped+=("$target")
        iptables -t "$table" -D "$chain" "$num" 2>/dev/null || true
      done < <(iptables -t "$table" -L "$chain" -n --line-numbers 2>/dev/null | grep -E "$pattern" | awk '{print $1, $2}' | sort -rn)
    done
    for chain in $(printf '%s\n' "${jumped[@]}" | sort -u); do
      case $chain in CNI-HOSTPORT-*|CNI-FORWARD|CNI-ADMIN) continue ;; esac
      iptables -t "$table" -F "$chain" 2>/dev/null && iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

# down_nomad stops fnhook's jobs (and only those), waits until their allocations stopped,
# purges them, then stops the agent.
down_nomad() {
  if running nomad && nomad_ok; then
    local jobs allocs NOMAD_TOKEN
    NOMAD_TOKEN=$(secret NOMAD_TOKEN)
    jobs=$(nomad_api "/v1/jobs?prefix=fnhook-&namespace=*" | jq -r '.[] | "\(.ID)?namespace=\(.Namespace)"' || true)
    for j in $jobs; do nomad_api "/v1/job/$j" -X DELETE >/dev/null || true; done
    local end=$((SECONDS + 60))
    while ((SECONDS < end)); do
      allocs=$(nomad_api "/v1/allocations?namespace=*" | jq -r '[.[] | select((.JobID | startswith("fnhook-")) and (.ClientStatus == "running" or .ClientStatus == "pending"))] | length' || echo 0)
      [ "$allocs" = 0 ] && break
      sleep 0.5
    done
    for j in $jobs; do nomad_api "/v1/job/$j&purge=true" -X DELETE >/dev/null || true; done
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
  if running rabbitmq; then
    rabbitmqctl -q stop >/dev/null 2>&1 || true
    stop_pid rabbitmq 30
    # RabbitMQ's port mapper daemon outlives the broker; it exits once no node is registered.
    for epmd in /usr/lib/erlang/bin/epmd /usr/lib/erlang/erts-*/bin/epmd; do
      [ -x "$epmd" ] && { "$epmd" -kill >/dev/null 2>&1 || true; break; }
    done
  fi
  rm -f "$(pidfile rabbitmq)"
  log "infrastructure is down"
}

# cmd_purge stops everything and removes this state directory with all its data (what
# `make test` does with the state directory it made for its run).
cmd_purge() {
  cmd_down
  rm -rf "$RABBIT_DATA" "$FNHOOK_STATE"
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
FNHOOK_AMQP_URL=amqp://127.0.0.1:5672/
FNHOOK_DYNAMODB_ENDPOINT=http://127.0.0.1:$DYNAMODB_PORT
FNHOOK_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
FNHOOK_MODULES_DIR=$MODULES_DIR
FNHOOK_SECRETS_FILE=$SECRETS
EOE
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  purge) cmd_purge ;;
  status) cmd_status ;;
  env) cmd_env ;;
  sync-runner) sync_runner ;;
  start) secrets; sync_runner; shift; for n in "$@"; do "up_$n"; done ;;
  *) die "usage: $0 up|down|purge|status|env" ;;
esac
