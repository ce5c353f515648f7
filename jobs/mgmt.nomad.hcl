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
variable "admin_key" {
  type        = string
  description = "The admin key of the management API."
}
variable "npm_registry" {
  type    = string
  default = "https://registry.npmjs.org/"
}

job "fnhook-mgmt" {
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
        FNHOOK_AMQP_URL              = var.amqp_url
        FNHOOK_DYNAMODB_ENDPOINT     = var.dynamodb_endpoint
        FNHOOK_S3_ENDPOINT           = var.s3_endpoint
        FNHOOK_AWS_ACCESS_KEY_ID     = var.aws_access_key_id
        FNHOOK_AWS_SECRET_ACCESS_KEY = var.aws_secret_access_key
        FNHOOK_ADMIN_KEY             = var.admin_key
        FNHOOK_NPM_REGISTRY          = var.npm_registry
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
