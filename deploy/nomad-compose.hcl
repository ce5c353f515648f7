# Nomad agent configuration used by docker-compose.yml (scripts/infra.sh writes the one
# `make up` uses, with the chroot computed from the host's node binary).
client {
  cni_path = "/opt/cni/bin"
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
  host_volume "fnhook-modules" {
    path      = "/var/lib/fnhook/modules"
    read_only = true
  }
  host_volume "fnhook-runner" {
    path      = "/opt/fnhook/runner"
    read_only = true
  }
}
consul {
  address = "consul:8500"
}
