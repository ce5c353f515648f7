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
variable "amqp_url" {
  type    = string
  default = "amqp://guest:guest@127.0.0.1:5672/"
}
variable "dynamodb_endpoint" {
  type    = string
  default = "http://127.0.0.1:8000"
}
variable "s3_endpoint" {
  type    = string
  default = "http://127.0.0.1:7070"
}
variable "aws_access_key_id" {
  type    = string
  default = ""
}
variable "aws_secret_access_key" {
  type    = string
  default = ""
}
variable "handler_secret" {
  type        = string
  description = "Secret the handler derives runner tokens from; the gateway derives the resolve token from it."
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
  type    = number
  default = 16
}

job "fnhook-handler" {
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
        FNHOOK_AMQP_URL              = var.amqp_url
        FNHOOK_DYNAMODB_ENDPOINT     = var.dynamodb_endpoint
        FNHOOK_S3_ENDPOINT           = var.s3_endpoint
        FNHOOK_AWS_ACCESS_KEY_ID     = var.aws_access_key_id
        FNHOOK_AWS_SECRET_ACCESS_KEY = var.aws_secret_access_key
        FNHOOK_HANDLER_SECRET        = var.handler_secret
        FNHOOK_NODE_ID               = "${node.unique.id}"
        FNHOOK_NOMAD_ADDR            = var.nomad_addr
        FNHOOK_MODULES_DIR           = var.modules_dir
        FNHOOK_RUNNER_JOB_FILE       = var.runner_job_file
        FNHOOK_POOL_MIN_IDLE         = var.pool_min_idle
        FNHOOK_POOL_MAX_RUNNERS      = var.pool_max_runners
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
