package kube_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/delivery"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRunsWithDeployRole runs a script step, and the sweep, as the
// ServiceAccount of scripts/deploy/kubernetes-rbac.yaml under the real
// RBAC authorizer: the Role it ships is enough.
func TestRunsWithDeployRole(t *testing.T) {
	t.Parallel()
	e := newKEnvOn(t, kubetest.StartRBAC(t), kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	if err := kubetest.ApplyManifests(ctx, e.s.Config(), e.ns, []byte(readDeployRBAC(t))); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.r.Config, err = e.s.ServiceAccountConfig(ctx, e.ns, "stroem-worker"); err != nil {
		t.Fatal(err)
	}
	job := e.script("s", map[string]any{"script": "echo hi"}, 60)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	e.waitRunning(ctx, p)
	e.k.Log(e.ns, p.Name, "step", "hi")
	e.terminate(ctx, p.Name, 0)
	if out := e.wait(ctx, done); !out.Succeeded() {
		t.Fatalf("outcome %+v, error %q", out, e.step(job, "s").Error)
	}
	if got := e.lines(job); !contains(got, "hi") {
		t.Errorf("logs = %q", got)
	}
	e.waitGone(ctx, p.Name)

	leftover(t, ctx, e, "left", e.r.Home, "x0-left")
	d := &delivery.Deliverer{Root: delivery.Root(e.cfg.WorkspaceDir)}
	if n, err := e.r.Sweep(ctx, d.Own); n != 1 || err != nil {
		t.Errorf("Sweep() as the worker's ServiceAccount = %d, %v; want 1", n, err)
	}
}

// TestStatusReadError: a worker that may create a pod but not read it
// fails the step with the reference worker's "Failed to get pod status"
// and still deletes the pod and its Secret.
func TestStatusReadError(t *testing.T) {
	t.Parallel()
	e := newKEnvOn(t, kubetest.StartRBAC(t), kubetest.KubeletOptions{})
	ctx := ctxT(t)
	role := strings.NewReplacer("create, get, list, watch, delete", "create, delete", "resources: [pods/log]", "resources: [pods/exec]").
		Replace(readDeployRBAC(t))
	if err := kubetest.ApplyManifests(ctx, e.s.Config(), e.ns, []byte(role)); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.r.Config, err = e.s.ServiceAccountConfig(ctx, e.ns, "stroem-worker"); err != nil {
		t.Fatal(err)
	}
	kube.SetMaxFailures(e.r, 2)
	job := e.script("s", map[string]any{"script": "true"}, 0)
	out := e.wait(ctx, e.start(ctx))
	st := e.step(job, "s")
	if out.ExitCode != -1 || !strings.HasPrefix(st.Error, "Failed to execute step: Failed to get pod status: ") {
		t.Errorf("exit %d error %q, want -1 and Failed to get pod status", out.ExitCode, st.Error)
	}
	pods, err := e.s.Client().CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("pods left: %v, %v", pods, err)
	}
	secrets, err := e.s.Client().CoreV1().Secrets(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(secrets.Items) != 0 {
		t.Errorf("secrets left: %d, %v", len(secrets.Items), err)
	}
}

func readDeployRBAC(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "scripts", "deploy", "kubernetes-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
