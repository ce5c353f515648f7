# The runner job template: one warm runner, its own Nomad job (SPEC section 7).
#
# services/handler registers one job per runner from this file: it parses it through the
# Nomad API (POST /v1/jobs/parse) with the variables below and registers the result. One
# job per runner, not one job with a count, so the handler alone picks which runner ends
# (hashicorp/nomad#7876). Never restarted or rescheduled: a task restarted in place keeps
# its alloc directory, which may hold tenant code; the handler starts a fresh runner instead.
#
# The client must offer the host volumes "fnhook-runner" (services/handler/runner) and
# "fnhook-modules" (the node's module cache), CNI bridge networking, and a minimal
# client.chroot_env (node and its libraries only: no shell); scripts/infra.sh writes such
# a client configuration.

variable "job_id" {
  type        = string
  description = "The job's id: <prefix>-<node8>-<random>."
}

variable "node_id" {
  type        = string
  description = "The Nomad node the runner must run on: the handler's own node."
}

variable "token" {
  type        = string
  description = "The runner token, hex(HMAC-SHA256(handler secret, job_id))."
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "size_class" {
  type        = string
  default     = "default"
  description = "The size class (warm pool) this runner belongs to."
}

variable "memory_mb" {
  type        = number
  default     = 256
  description = "Hard memory limit of the whole runner (parent and tenant child): memory_max."
}

variable "memory_reserve_mb" {
  type        = number
  default     = 64
  description = "Memory the runner reserves on its node (what Nomad places it by): about what an idle runner uses."
}

variable "heap_mb" {
  type        = number
  default     = 128
  description = "V8 old-space limit of the child that runs tenant code."
}

variable "cpu_mhz" {
  type        = number
  default     = 10
  description = "CPU the runner reserves (MHz; on cgroups v1 also its cpu.shares weight)."
}

variable "priority" {
  type    = number
  default = 50
}

job "fnhook-runner" {
  id          = var.job_id
  name        = var.job_id
  type        = "service"
  datacenters = var.datacenters
  priority    = var.priority

  meta {
    fnhook_role       = "runner"
    fnhook_job        = var.job_id
    fnhook_node       = var.node_id
    fnhook_size_class = var.size_class
  }

  constraint {
    attribute = "${node.unique.id}"
    value     = var.node_id
  }

  # No deployment to watch: a runner is ready when the handler says so.
  update {
    max_parallel = 0
  }

  group "runner" {
    count = 1

    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    # Its own network namespace; the handler and the gateway reach it only through the
    # port mapped on the agent's network interface (127.0.0.1 locally).
    network {
      mode = "bridge"
      port "http" {
        to = 8080
      }
    }

    volume "runner" {
      type      = "host"
      source    = "fnhook-runner"
      read_only = true
    }

    volume "modules" {
      type      = "host"
      source    = "fnhook-modules"
      read_only = true
    }

    # A runner writes only function code and links: Nomad's smallest disk (logs are off).
    ephemeral_disk {
      size = 10
    }

    # No Consul service: the handler finds its runners through Nomad and probes them itself,
    # and a per-runner Consul check cost CPU at every start and every 5 s while idle
    # (docs/performance.md, runner cost).

    task "runner" {
      driver = "exec"
      user   = "nobody"

      config {
        command = "/usr/bin/node"
        args    = ["/runner/main.js"]
      }

      volume_mount {
        volume      = "runner"
        destination = "/runner"
        read_only   = true
      }

      volume_mount {
        volume      = "modules"
        destination = "/modules"
        read_only   = true
      }

      # The runner reads these once and clears its environment; tenant code gets an
      # environment built from nothing.
      env {
        FNHOOK_RUNNER_TOKEN   = var.token
        FNHOOK_RUNNER_PORT    = "8080"
        FNHOOK_RUNNER_MODULES = "/modules"
        FNHOOK_RUNNER_HEAP_MB = "${var.heap_mb}"
      }

      # Nomad places a runner by what it reserves (memory) and limits it by memory_max, with
      # memory oversubscription on (the scheduler configuration): an idle runner uses ~37 MB
      # (PSS, Nomad's executor included), so reserving its whole limit would fill a node
      # with a few hundred MB used per GB reserved. The handler derives the node's runner
      # capacity from this reservation; where oversubscription is off, Nomad ignores
      # memory_max and the handler sets memory_reserve_mb to memory_mb.
      resources {
        cpu        = var.cpu_mhz
        memory     = var.memory_reserve_mb
        memory_max = var.memory_mb
      }

      kill_timeout = "6s"

      # No Nomad log collection (no logmon process, ~17 MB PSS, per runner): the runner keeps
      # tenant output and its own lines in a bounded log stream that the handler reads over
      # the runner protocol (GET /_fnhook/logs) into its own log, tenant by tenant. What the
      # runner prints itself is one "listening" line and its fatal errors; a runner that
      # fails to start is explained by Nomad's task events, which the handler logs.
      logs {
        disabled      = true
        max_files     = 1
        max_file_size = 1
      }
    }
  }
}
