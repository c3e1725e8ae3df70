package kube_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestWaitingRules: a container that can never start fails the step at
// once; an image pull back-off fails it after the back-off limit, a pod
// that stays Pending after the pending limit (both shortened here), each
// with the reference worker's line, and the pod is deleted.
func TestWaitingRules(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	// Each case has the limit it tests short and the other long, so that
	// a slow machine cannot make the other fire first.
	const long = time.Hour
	tests := []struct {
		name             string
		backoff, pending time.Duration
		states           map[string]corev1.ContainerState // nil: the pod is left Pending
		want             string
	}{
		{"fail fast", long, long, map[string]corev1.ContainerState{"step": kubetest.Waiting("InvalidImageName", `couldn't parse image name "UPPER"`)},
			`Container error: InvalidImageName — couldn't parse image name "UPPER"`},
		{"config error without message", long, long, map[string]corev1.ContainerState{"step": kubetest.Waiting("CreateContainerConfigError", "")},
			"Container error: CreateContainerConfigError — Container step waiting: CreateContainerConfigError"},
		{"init image pull back-off", 500 * time.Millisecond, long, map[string]corev1.ContainerState{"workspace-init": kubetest.Waiting("ImagePullBackOff", "Back-off pulling image")},
			"Container error: ImagePullBackOff after 0s — Back-off pulling image"},
		{"pending", long, 1500 * time.Millisecond, nil, "Pod stuck in Pending state for 0s (check events for details: missing volumes, unschedulable, etc.)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			kube.SetLimits(e.r, tt.backoff, tt.pending)
			job := e.script("s", map[string]any{"script": "true"}, 0)
			done := e.start(ctx)
			p := e.waitPod(ctx, job)
			if tt.states != nil {
				if _, err := e.k.WaitFor(ctx, e.ns, p.Name, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
					t.Fatal(err)
				}
				if _, err := e.k.SetContainers(ctx, e.ns, p.Name, tt.states); err != nil {
					t.Fatal(err)
				}
			}
			out := e.wait(ctx, done)
			st := e.step(job, "s")
			if out.ExitCode != 1 || exitCode(st) != 1 {
				t.Errorf("exit code %d (server %d), want 1", out.ExitCode, exitCode(st))
			}
			// The seconds depend on the limit and the machine; the rest is exact.
			before, after, _ := strings.Cut("Exit code: 1\nStderr: "+tt.want, "0s")
			if !strings.HasPrefix(st.Error, before) || !strings.HasSuffix(st.Error, after) {
				t.Errorf("error = %q, want %q (any seconds)", st.Error, "Exit code: 1\nStderr: "+tt.want)
			}
			e.waitGone(ctx, p.Name)
		})
	}
}

// TestInitContainerFailure: a workspace-init container that fails ends
// the step with its exit code and its log in the error.
func TestInitContainerFailure(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.script("s", map[string]any{"script": "true"}, 0)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	if _, err := e.k.WaitFor(ctx, e.ns, p.Name, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.k.SetContainer(ctx, e.ns, p.Name, "workspace-init", kubetest.Running()); err != nil {
		t.Fatal(err)
	}
	e.k.Log(e.ns, p.Name, "workspace-init", "curl: (22) The requested URL returned error: 404")
	if _, err := e.k.SetContainer(ctx, e.ns, p.Name, "workspace-init", kubetest.Terminated(22, "")); err != nil {
		t.Fatal(err)
	}
	out := e.wait(ctx, done)
	st := e.step(job, "s")
	want := "Exit code: 22\nStderr: curl: (22) The requested URL returned error: 404\nContainer error: workspace-init exited with code 22 (fetching the workspace revision)"
	if out.ExitCode != 22 || st.Error != want {
		t.Errorf("exit %d error %q, want 22 and %q", out.ExitCode, st.Error, want)
	}
	e.waitGone(ctx, p.Name)
}

// TestSidecarNeverExits: the step ends when its container does, while a
// sidecar of the manifest overrides runs on (the pod stays Running).
func TestSidecarNeverExits(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.podStep("s", "alpine:3", map[string]any{"cmd": "true", "manifest": map[string]any{"spec": map[string]any{
		"containers": []any{map[string]any{"name": "proxy", "image": "envoy:test"}},
	}}}, 0)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	if len(p.Spec.Containers) != 2 || p.Spec.Containers[1].Name != "proxy" {
		t.Fatalf("containers = %+v, want step and the sidecar", p.Spec.Containers)
	}
	e.waitRunning(ctx, p)
	e.terminate(ctx, p.Name, 0)
	if pod, err := e.k.WaitFor(ctx, e.ns, p.Name, func(*corev1.Pod) bool { return true }); err == nil && pod.Status.Phase != corev1.PodRunning && pod.DeletionTimestamp == nil {
		t.Errorf("pod phase %s with the sidecar running, want Running", pod.Status.Phase)
	}
	out := e.wait(ctx, done)
	if !out.Succeeded() {
		t.Errorf("outcome %+v, want success while the sidecar runs", out)
	}
	e.waitGone(ctx, p.Name)
}

// TestWaitingEvents: when a waiting rule fails the step, the pod's
// warning events say why, newest first.
func TestWaitingEvents(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.script("s", map[string]any{"script": "true"}, 0)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	for i, ev := range []corev1.Event{
		{Type: corev1.EventTypeNormal, Reason: "Scheduled", Message: "assigned"},
		{Type: corev1.EventTypeWarning, Reason: "FailedMount", Message: `MountVolume.SetUp failed for volume "startup-scripts" : configmap "startup" not found`},
	} {
		ev.ObjectMeta = metav1.ObjectMeta{Name: p.Name + "." + strconv.Itoa(i)}
		ev.InvolvedObject = corev1.ObjectReference{Kind: "Pod", Namespace: e.ns, Name: p.Name, UID: p.UID}
		ev.LastTimestamp = metav1.NewTime(time.Now().Add(time.Duration(i) * time.Second))
		if _, err := e.s.Client().CoreV1().Events(e.ns).Create(ctx, &ev, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.k.WaitFor(ctx, e.ns, p.Name, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.k.SetContainer(ctx, e.ns, p.Name, "step", kubetest.Waiting("CreateContainerConfigError", `secret "db" not found`)); err != nil {
		t.Fatal(err)
	}
	e.wait(ctx, done)
	want := "Exit code: 1\nStderr: Container error: CreateContainerConfigError — secret \"db\" not found\n" +
		`Event: FailedMount: MountVolume.SetUp failed for volume "startup-scripts" : configmap "startup" not found`
	if st := e.step(job, "s"); st.Error != want {
		t.Errorf("error = %q, want %q", st.Error, want)
	}
}
