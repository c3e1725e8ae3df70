package main

import (
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
)

// TestRunners: the Kubernetes runner exists with its capability, with
// the config's settings and a home id that stays the same for the home.
func TestRunners(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	load := func(caps string) *config.Config {
		cfg, err := config.Load(config.LoadOptions{Env: mapEnv{}, Flags: map[string]string{
			"server_url": "http://127.0.0.1:1", "worker_token": "0123456789abcdef0123456789abcdef",
			"workspace_dir": dir, "capabilities": caps, "kubernetes.namespace": "steps",
		}})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	set, err := runners(load("script"), nil)
	if err != nil || set[runner.Local] == nil || set[runner.Kubernetes] != nil {
		t.Fatalf("runners(script) = %v, %v; want local only", set, err)
	}
	set, err = runners(load("script,kubernetes"), nil)
	if err != nil {
		t.Fatal(err)
	}
	k, ok := set[runner.Kubernetes].(*kube.Runner)
	if !ok || k.Namespace != "steps" || k.InitImage != config.DefaultKubeInitImage || k.Home == "" || k.WorkerToken == "" {
		t.Fatalf("kubernetes runner = %+v", set[runner.Kubernetes])
	}
	again, err := runners(load("kubernetes"), nil)
	if err != nil || again[runner.Kubernetes].(*kube.Runner).Home != k.Home {
		t.Errorf("home id changed between runs of one home: %v", err)
	}
	if _, ok := set[runner.Kubernetes].(runner.Sweeper); !ok {
		t.Error("the Kubernetes runner is not a Sweeper")
	}
}
