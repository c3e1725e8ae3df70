# Long-running workers (`supervise`) as a Nomad service job (Nomad 1.4+).
# The token is read from the Nomad variable nomad/jobs/stroem-worker, which
# the job's workload identity may read without any ACL policy:
#   nomad var put nomad/jobs/stroem-worker token=@worker-token
job "stroem-worker" {
  type = "service"

  group "worker" {
    # Each allocation gets its own dynamic host port (the exec driver shares
    # the host's network), so several fit on one node.
    count = 2

    network {
      port "metrics" {}
    }

    service {
      name     = "stroem-worker"
      provider = "nomad"
      port     = "metrics"
      check {
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "worker" {
      driver = "exec"
      # SIGTERM drains; Nomad caps kill_timeout at the client's
      # max_kill_timeout (30 s by default: raise it for long drains).
      kill_signal  = "SIGTERM"
      kill_timeout = "340s"

      config {
        command = "/usr/local/bin/stroem-worker"
        # NOMAD_ADDR_metrics is the host address and port allocated above,
        # where the service check looks.
        args = ["supervise", "--listen", "${NOMAD_ADDR_metrics}"]
      }

      env {
        STROEM__SERVER_URL         = "http://stroem.example.com:8080"
        STROEM__WORKER_NAME        = "${node.unique.name}-${NOMAD_ALLOC_INDEX}"
        STROEM__WORKER_TOKEN_FILE  = "${NOMAD_SECRETS_DIR}/token"
        STROEM__DRAIN_TIMEOUT_SECS = "300"
        STROEM__WORKSPACE_DIR      = "${NOMAD_TASK_DIR}/work"
      }

      template {
        data        = "{{ with nomadVar \"nomad/jobs/stroem-worker\" }}{{ .token }}{{ end }}"
        destination = "${NOMAD_SECRETS_DIR}/token"
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
