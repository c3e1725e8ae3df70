package kube_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestScriptStep runs a script step of a for-each instance ("step[0]")
// as a pod through claim-and-run: the pod the API server accepted, its
// Secret, the log and OUTPUT delivered, and both deleted at the end.
func TestScriptStep(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.script("deploy[0]", map[string]any{"script": "echo hi", "env": map[string]any{"GREETING": "hej", "API_PASSWORD": "s3cr3t-value-123"},
		"resources": map[string]any{"cpu": "250m", "memory": "64Mi"}}, 120)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)

	// Labels sanitized, raw names in annotations.
	if got, want := p.Labels[kube.LabelStep], "deploy-0"; got != want {
		t.Errorf("label %s = %q, want %q", kube.LabelStep, got, want)
	}
	if got := p.Annotations[kube.AnnotationStep]; got != "deploy[0]" {
		t.Errorf("annotation %s = %q, want deploy[0]", kube.AnnotationStep, got)
	}
	if p.Labels[kube.LabelHome] != e.r.Home || p.Labels[kube.LabelWorkerID] == "" || p.Labels[kube.LabelTask] != "build" {
		t.Errorf("labels = %v, want home, worker id and task", p.Labels)
	}
	if !strings.HasPrefix(p.Name, "stroem-"+job[:8]+"-build-deploy-0-") {
		t.Errorf("pod name %q, want stroem-<job8>-build-deploy-0-<suffix>", p.Name)
	}
	// The token and the step's environment are nowhere in the pod: they
	// are in a Secret of its own, owned by it.
	raw, _ := json.Marshal(p)
	if strings.Contains(string(raw), fakeserver.DefaultToken) || strings.Contains(string(raw), "s3cr3t-value-123") {
		t.Errorf("the worker token or the step's secret is in the pod spec: %s", raw)
	}
	sec, err := e.s.Client().CoreV1().Secrets(e.ns).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pod's secret: %v", err)
	}
	if string(sec.Data["token"]) != fakeserver.DefaultToken {
		t.Errorf("secret token = %q, want the worker token", sec.Data["token"])
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %q, want Never", p.Spec.RestartPolicy)
	}
	if p.Spec.ActiveDeadlineSeconds == nil || *p.Spec.ActiveDeadlineSeconds != 120+3+60 {
		t.Errorf("activeDeadlineSeconds = %v, want timeout 120 + grace 3 + 60", p.Spec.ActiveDeadlineSeconds)
	}
	init := containerByName(p.Spec.InitContainers, "workspace-init")
	if init == nil {
		t.Fatalf("no workspace-init container: %+v", p.Spec.InitContainers)
	}
	wantURL := e.hs.URL + "/worker/workspace/default.tar.gz?revision=" + e.rev
	var gotURL string
	var tokenRef *corev1.SecretKeySelector
	for _, ev := range init.Env {
		switch ev.Name {
		case "STROEM_WORKSPACE_URL":
			gotURL = ev.Value
		case "STROEM_WORKER_TOKEN":
			if ev.ValueFrom != nil {
				tokenRef = ev.ValueFrom.SecretKeyRef
			}
		}
	}
	if gotURL != wantURL {
		t.Errorf("workspace URL = %q, want the claimed revision %q", gotURL, wantURL)
	}
	if tokenRef == nil || tokenRef.Name != p.Name || tokenRef.Key != "token" {
		t.Errorf("token env from %+v, want secret %s key token", tokenRef, p.Name)
	}
	if init.Image != "curl:test" {
		t.Errorf("init image = %q", init.Image)
	}
	step := containerByName(p.Spec.Containers, "step")
	if step == nil {
		t.Fatal("no step container")
	}
	if diff := cmp.Diff([]string{"sh", "-c", "echo hi"}, step.Command); diff != "" || step.Args != nil {
		t.Errorf("step command (-want +got):\n%s args %q", diff, step.Args)
	}
	if step.Image != "runner:test" || step.WorkingDir != "/workspace" {
		t.Errorf("step image %q workdir %q, want runner:test and /workspace", step.Image, step.WorkingDir)
	}
	env := map[string]string{}
	for _, ev := range step.Env {
		env[ev.Name] = ev.Value
		if ev.ValueFrom != nil && ev.ValueFrom.SecretKeyRef != nil && ev.ValueFrom.SecretKeyRef.Name == p.Name {
			env[ev.Name] = string(sec.Data[ev.ValueFrom.SecretKeyRef.Key])
		}
	}
	for k, v := range map[string]string{"GREETING": "hej", "API_PASSWORD": "s3cr3t-value-123", "STATE_DIR": "/state", "STATE_OUT_DIR": "/state-out", "STROEM_STEP_NAME": "deploy[0]"} {
		if env[k] != v {
			t.Errorf("step env %s = %q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["STROEM__WORKER_TOKEN"]; ok {
		t.Error("the step gets the worker's token variable")
	}
	if q := step.Resources.Requests[corev1.ResourceCPU]; q.String() != "250m" {
		t.Errorf("cpu request = %s, want 250m", q.String())
	}
	mounts := map[string]bool{}
	for _, m := range step.VolumeMounts {
		mounts[m.MountPath] = m.ReadOnly
	}
	if diff := cmp.Diff(map[string]bool{"/workspace": false, "/state": true, "/state-out": false, "/global-state": true, "/global-state-out": false}, mounts); diff != "" {
		t.Errorf("step mounts (-want +got):\n%s", diff)
	}

	e.waitRunning(ctx, p) // the runner follows the log: it has made the pod the Secret's owner
	if sec, err = e.s.Client().CoreV1().Secrets(e.ns).Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != p.UID {
		t.Errorf("secret owners = %+v, want the pod %s", sec.OwnerReferences, p.UID)
	}
	e.k.Log(e.ns, p.Name, "step", "hi", `OUTPUT: {"n": 1}`)
	e.terminate(ctx, p.Name, 0)
	out := e.wait(ctx, done)
	if !out.Succeeded() {
		t.Fatalf("outcome %+v, want success", out)
	}
	st := e.step(job, "deploy[0]")
	if st.Status != "completed" || string(st.Output) != `{"n":1}` && string(st.Output) != `{"n": 1}` {
		t.Errorf("step %s output %s, want completed with {n: 1}", st.Status, st.Output)
	}
	if got := e.lines(job); !contains(got, "hi") {
		t.Errorf("logs = %q, want hi", got)
	}
	e.waitGone(ctx, p.Name)
}

// TestPodStepExitCodes runs `type: pod` steps: the image's own command,
// its exit code the step's, no workspace; the Secret holds the
// environment but no worker token.
func TestPodStepExitCodes(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	for _, code := range []int32{0, 3, 137} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			ctx := ctxT(t)
			job := e.podStep("s", "alpine:3", map[string]any{"cmd": "exit 3", "env": map[string]any{"A": "b"}}, 0)
			done := e.start(ctx)
			p := e.waitPod(ctx, job)
			if len(p.Spec.InitContainers) != 0 || len(p.Spec.Volumes) != 0 || p.Spec.ActiveDeadlineSeconds != nil {
				t.Errorf("pod action: init %v volumes %v deadline %v, want none", p.Spec.InitContainers, p.Spec.Volumes, p.Spec.ActiveDeadlineSeconds)
			}
			step := containerByName(p.Spec.Containers, "step")
			if step.Image != "alpine:3" || step.Command != nil || !cmp.Equal(step.Args, []string{"sh", "-c", "exit 3"}) {
				t.Errorf("step image %q command %q args %q", step.Image, step.Command, step.Args)
			}
			sec, err := e.s.Client().CoreV1().Secrets(e.ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil || string(sec.Data["env.A"]) != "b" || sec.Data["token"] != nil {
				t.Errorf("the pod's secret: %v, %v; want env.A and no token", sec.Data, err)
			}
			e.waitRunning(ctx, p)
			e.k.Log(e.ns, p.Name, "step", "working")
			e.terminate(ctx, p.Name, code)
			out := e.wait(ctx, done)
			st := e.step(job, "s")
			if exitCode(st) != int(code) || out.ExitCode != int(code) {
				t.Errorf("step exit code %d (outcome %d), want %d", exitCode(st), out.ExitCode, code)
			}
			if code != 0 && !strings.HasPrefix(st.Error, fmt.Sprintf("Exit code: %d\n", code)) {
				t.Errorf("error = %q", st.Error)
			}
			e.waitGone(ctx, p.Name)
		})
	}
}
