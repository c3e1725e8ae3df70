package kube_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestLoadConfig: $KUBECONFIG is read as kubectl reads it, its context's
// namespace is the default one, and a runner without a Config runs a
// step through it. (Not parallel: it sets the environment.)
func TestLoadConfig(t *testing.T) {
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubetest.WriteKubeconfig(path, e.s.Config()); err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kc.Contexts[kc.CurrentContext].Namespace = e.ns
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)
	t.Setenv("HOME", t.TempDir()) // no ~/.kube/config to fall back on
	cfg, ns, err := kube.LoadConfig()
	if err != nil || ns != e.ns || cfg.Host != e.s.Host() {
		t.Fatalf("LoadConfig() = %v, %q, %v; want %s in %s", cfg, ns, err, e.s.Host(), e.ns)
	}
	e.r.Config, e.r.Namespace = nil, ""
	job := e.podStep("s", "alpine:3", map[string]any{"cmd": "true"}, 0)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	e.waitRunning(ctx, p)
	e.terminate(ctx, p.Name, 0)
	if out := e.wait(ctx, done); !out.Succeeded() {
		t.Errorf("outcome %+v", out)
	}

	// Neither a kubeconfig nor a cluster: the step fails with the
	// reference worker's words.
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	os.Unsetenv("KUBERNETES_SERVICE_HOST")
	e.r = &kube.Runner{}
	job = e.podStep("s", "alpine:3", map[string]any{"cmd": "true"}, 0)
	out := e.wait(ctx, e.start(ctx))
	if st := e.step(job, "s"); out.ExitCode != -1 || !strings.HasPrefix(st.Error, "Failed to execute step: Failed to create Kubernetes client: ") {
		t.Errorf("without any config: exit %d error %q", out.ExitCode, st.Error)
	}
}
