# One step per run (`claim-and-run`) as a periodic batch job (Nomad 1.6+).
# Exit 0 is success for "step delivered" and for "no work", so Nomad never
# re-runs a delivered step (a re-run would claim a different one). Non-zero
# codes are worker-side problems: 69 and 75 are worth a restart, 2 and 77
# are not (Nomad cannot tell codes apart, so attempts stay low).
#
# The token is read from the Nomad variable nomad/jobs/stroem-worker-oneshot:
# each run is a child job, and its workload identity carries the parent's
# id, so the implicit ACL policy lets it read that path:
#   nomad var put nomad/jobs/stroem-worker-oneshot token=@worker-token
job "stroem-worker-oneshot" {
  type = "batch"

  periodic {
    crons = ["* * * * *"]
    # Each run has its own task directory, so runs may overlap (each claims
    # a different step), and each registers its own worker row and keeps no
    # spool for the next run: for that, put workspace_dir on a host volume.
    prohibit_overlap = false
  }

  group "worker" {
    restart {
      attempts = 1
      delay    = "15s"
      interval = "10m"
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "claim-and-run" {
      driver       = "exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        command = "/usr/local/bin/stroem-worker"
        args    = ["claim-and-run", "--wait", "50s", "--deadline", "3500s"]
      }

      env {
        STROEM__SERVER_URL        = "http://stroem.example.com:8080"
        STROEM__WORKER_NAME       = "nomad-oneshot"
        STROEM__WORKER_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/token"
        STROEM__CANCEL_GRACE_SECS = "10"
        # The default (/var/tmp) is outside the exec driver's chroot.
        STROEM__WORKSPACE_DIR = "${NOMAD_TASK_DIR}/work"
      }

      template {
        data        = "{{ with nomadVar \"nomad/jobs/stroem-worker-oneshot\" }}{{ .token }}{{ end }}"
        destination = "${NOMAD_SECRETS_DIR}/token"
      }
    }
  }
}
