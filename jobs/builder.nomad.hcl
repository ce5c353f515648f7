# fnhook-builder: builds each npm module@version once and stores it in S3.
# Run with: nomad job run -var bin_dir=... -var-file=... jobs/builder.nomad.hcl (scripts/up.sh does it).

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
  default = "127.0.0.1:8083"
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
variable "npm_cafile" {
  type    = string
  default = ""
}
variable "concurrency" {
  type    = number
  default = 2
}

job "fnhook-builder" {
  namespace   = "fnhook"
  type        = "service"
  datacenters = var.datacenters

  group "builder" {
    count = 1

    restart {
      attempts = 10
      interval = "5m"
      delay    = "1s"
      mode     = "delay"
    }

    task "builder" {
      driver = "raw_exec"

      config {
        command = "${var.bin_dir}/builder"
      }

      env {
        FNHOOK_BUILD                 = var.build_id
        FNHOOK_LISTEN                = var.listen
        FNHOOK_LOG_LEVEL             = var.log_level
        FNHOOK_CONSUL_ADDR           = var.consul_addr
        FNHOOK_DYNAMODB_ENDPOINT     = var.dynamodb_endpoint
        FNHOOK_S3_ENDPOINT           = var.s3_endpoint
        FNHOOK_NPM_REGISTRY          = var.npm_registry
        FNHOOK_NPM_CAFILE            = var.npm_cafile
        FNHOOK_BUILDER_CONCURRENCY   = var.concurrency
      }

      # Secrets (tokens, passwords, keys) come from the Nomad Variable nomad/jobs/fnhook-builder
      # in this namespace, which scripts/deploy.sh writes; the task reads it with its own
      # workload identity. So no secret is in this job spec, on a command line or in a log.
      template {
        destination = "${NOMAD_SECRETS_DIR}/fnhook.env"
        env         = true
        change_mode = "restart"
        perms       = "0400"
        data        = <<-EOT
        {{- with nomadVar "nomad/jobs/fnhook-builder" }}{{ range .Tuples }}
        {{ .K }}={{ .V }}
        {{- end }}{{ end }}
        EOT
      }

      kill_timeout = "40s" # longer than the builder's own grace (FNHOOK_BUILDER_GRACE, 30 s)
      kill_signal  = "SIGTERM"

      resources {
        cpu    = 200
        memory = 1024
      }
    }
  }
}
