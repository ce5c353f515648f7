# fnhook-mgmt: the management API.
# Run with: nomad job run -var bin_dir=... -var-file=... jobs/mgmt.nomad.hcl (scripts/up.sh does it).

variable "bin_dir" {
  type        = string
  description = "Folder holding the fnhook service binaries."
}
variable "datacenters" {
  type    = list(string)
  default = ["*"]
}
variable "build_id" {
  type        = string
  default     = "dev"
  description = "Changes when the binaries change, so that a redeploy restarts the tasks."
}
variable "log_level" {
  type    = string
  default = "info"
}
variable "listen" {
  type    = string
  default = "127.0.0.1:8081"
}
variable "consul_addr" {
  type    = string
  default = "127.0.0.1:8500"
}
variable "dynamodb_endpoint" {
  type    = string
  default = "http://127.0.0.1:8000"
}
variable "s3_endpoint" {
  type    = string
  default = "http://127.0.0.1:7070"
}
variable "npm_registry" {
  type    = string
  default = "https://registry.npmjs.org/"
}

job "fnhook-mgmt" {
  namespace   = "fnhook"
  type        = "service"
  datacenters = var.datacenters

  group "mgmt" {
    count = 1

    restart {
      attempts = 10
      interval = "5m"
      delay    = "1s"
      mode     = "delay"
    }

    task "mgmt" {
      driver = "raw_exec"

      config {
        command = "${var.bin_dir}/mgmt"
      }

      env {
        FNHOOK_BUILD                 = var.build_id
        FNHOOK_LISTEN                = var.listen
        FNHOOK_LOG_LEVEL             = var.log_level
        FNHOOK_CONSUL_ADDR           = var.consul_addr
        FNHOOK_DYNAMODB_ENDPOINT     = var.dynamodb_endpoint
        FNHOOK_S3_ENDPOINT           = var.s3_endpoint
        FNHOOK_NPM_REGISTRY          = var.npm_registry
      }

      # Secrets (tokens, passwords, keys) come from the Nomad Variable nomad/jobs/fnhook-mgmt
      # in this namespace, which scripts/deploy.sh writes; the task reads it with its own
      # workload identity. So no secret is in this job spec, on a command line or in a log.
      template {
        destination = "${NOMAD_SECRETS_DIR}/fnhook.env"
        env         = true
        change_mode = "restart"
        perms       = "0400"
        data        = <<-EOT
        {{- with nomadVar "nomad/jobs/fnhook-mgmt" }}{{ range .Tuples }}
        {{ .K }}={{ .V }}
        {{- end }}{{ end }}
        EOT
      }

      kill_timeout = "20s"
      kill_signal  = "SIGTERM"

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
