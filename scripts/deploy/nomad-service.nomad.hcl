# Long-running workers (`supervise`) as a Nomad service job.
job "stroem-worker" {
  type = "service"

  group "worker" {
    count = 2

    network {
      port "metrics" { to = 9090 }
    }

    task "worker" {
      driver = "exec"
      # SIGTERM drains; Nomad caps kill_timeout at the client's
      # max_kill_timeout (30 s by default: raise it for long drains).
      kill_signal  = "SIGTERM"
      kill_timeout = "340s"

      config {
        command = "/usr/local/bin/stroem-worker"
        args    = ["supervise", "--listen", "0.0.0.0:9090"]
      }

      env {
        STROEM__SERVER_URL         = "http://stroem.service.consul:8080"
        STROEM__WORKER_NAME        = "${node.unique.name}-${NOMAD_ALLOC_INDEX}"
        STROEM__WORKER_TOKEN_FILE  = "${NOMAD_SECRETS_DIR}/token"
        STROEM__DRAIN_TIMEOUT_SECS = "300"
        STROEM__WORKSPACE_DIR      = "${NOMAD_TASK_DIR}/work"
      }

      template {
        data        = "{{ with nomadVar \"nomad/jobs/stroem-worker\" }}{{ .token }}{{ end }}"
        destination = "${NOMAD_SECRETS_DIR}/token"
      }

      service {
        name = "stroem-worker"
        port = "metrics"
        check {
          type     = "http"
          path     = "/readyz"
          interval = "10s"
          timeout  = "2s"
        }
      }

      restart {
        attempts = 10
        delay    = "15s"
        interval = "30m"
        mode     = "delay"
      }
    }
  }
}
