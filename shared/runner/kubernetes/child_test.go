package kube_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
	"k8s.io/client-go/tools/clientcmd"
)

// The test binary re-executed as a worker process (claim-and-run of one
// step), so that a test can SIGKILL it mid-step.
const (
	childEnv        = "KUBE_TEST_CHILD"
	childServer     = "KUBE_TEST_SERVER_URL"
	childWorkspace  = "KUBE_TEST_WORKSPACE_DIR"
	childKubeconfig = "KUBE_TEST_KUBECONFIG"
	childNamespace  = "KUBE_TEST_NAMESPACE"
	childHome       = "KUBE_TEST_HOME"
)

func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(config.LoadOptions{
		Env: mapLookuper{"STROEM__WORKER_TOKEN": fakeserver.DefaultToken},
		Flags: map[string]string{
			"server_url":    os.Getenv(childServer),
			"workspace_dir": os.Getenv(childWorkspace),
			"capabilities":  "script,kubernetes",
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rc, err := clientcmd.BuildConfigFromFlags("", os.Getenv(childKubeconfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r := &kube.Runner{Config: rc, Namespace: os.Getenv(childNamespace), ServerURL: cfg.ServerURL,
		WorkerToken: cfg.WorkerToken, Home: os.Getenv(childHome)}
	_, err = oneshot.Run(ctx, cfg, oneshot.Options{}, oneshot.Deps{
		Runners: runner.Set{runner.Local: &local.Runner{}, runner.Kubernetes: r}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
