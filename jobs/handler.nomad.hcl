# fnhook-handler: one per Nomad client node: the warm runner pool, assignment and module cache of its node.
# Run with: nomad job run -var bin_dir=... -var-file=... jobs/handler.nomad.hcl (scripts/up.sh does it).

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
  default = "127.0.0.1:8082"
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
variable "nomad_addr" {
  type    = string
  default = "http://127.0.0.1:4646"
}
variable "modules_dir" {
  type        = string
  description = "Host folder of the module cache; the same folder as the fnhook-modules host volume."
}
variable "runner_job_file" {
  type        = string
  description = "Path of jobs/runner.nomad.hcl on the node."
}
variable "pool_min_idle" {
  type    = number
  default = 2
}
variable "pool_max_runners" {
  type        = number
  default     = 0
  description = "Runners of the node at most; 0 derives it from the node's allocatable resources."
}

job "fnhook-handler" {
  namespace   = "fnhook"
  type        = "system"
  datacenters = var.datacenters

  group "handler" {
    restart {
      attempts = 10
      interval = "5m"
      delay    = "1s"
      mode     = "delay"
    }

    task "handler" {
      driver = "raw_exec"

      config {
        command = "${var.bin_dir}/handler"
      }

      env {
        FNHOOK_BUILD                 = var.build_id
        FNHOOK_LISTEN                = var.listen
        FNHOOK_LOG_LEVEL             = var.log_level
        FNHOOK_CONSUL_ADDR           = var.consul_addr
        FNHOOK_DYNAMODB_ENDPOINT     = var.dynamodb_endpoint
        FNHOOK_S3_ENDPOINT           = var.s3_endpoint
        FNHOOK_NODE_ID               = "${node.unique.id}"
        FNHOOK_NOMAD_ADDR            = var.nomad_addr
        FNHOOK_RUNNER_NAMESPACE      = "fnhook-runners"
        FNHOOK_MODULES_DIR           = var.modules_dir
        FNHOOK_RUNNER_JOB_FILE       = var.runner_job_file
        FNHOOK_POOL_MIN_IDLE         = var.pool_min_idle
        FNHOOK_POOL_MAX_RUNNERS      = var.pool_max_runners
      }

      # Secrets (tokens, passwords, keys) come from the Nomad Variable nomad/jobs/fnhook-handler
      # in this namespace, which scripts/deploy.sh writes; the task reads it with its own
      # workload identity. So no secret is in this job spec, on a command line or in a log.
      template {
        destination = "${NOMAD_SECRETS_DIR}/fnhook.env"
        env         = true
        change_mode = "restart"
        perms       = "0400"
        data        = <<-EOT
        {{- with nomadVar "nomad/jobs/fnhook-handler" }}{{ range .Tuples }}
        {{ .K }}={{ .V }}
        {{- end }}{{ end }}
        EOT
      }

      kill_timeout = "20s"
      kill_signal  = "SIGTERM"

      resources {
        cpu    = 200
        memory = 512
      }
    }
  }
}
