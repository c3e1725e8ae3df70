//go:build !nokubernetes

package main

import (
	"log/slog"

	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
)

// kubernetesRunner is the Kubernetes runner of a worker home. Built with
// -tags nokubernetes, the binary leaves it (and client-go) out: every
// process of the binary, one per step, then skips client-go's package
// initialisation (about 2 ms of CPU here; see README).
func kubernetesRunner(cfg *config.Config, home string, log *slog.Logger) (runner.Runner, error) {
	return &kube.Runner{
		Namespace: cfg.KubeNamespace, InitImage: cfg.KubeInitImage, StartupConfigMap: cfg.KubeStartupConfigMap,
		RunnerImage: cfg.RunnerImage, ServerURL: cfg.ServerURL, WorkerToken: cfg.WorkerToken,
		Home: home, Log: log,
	}, nil
}
