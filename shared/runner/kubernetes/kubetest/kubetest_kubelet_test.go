package kubetest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodLifecycle drives a pod the way the runner will see it: created,
// bound, Pending with waiting reasons, Running, the step exiting while the
// sidecar runs on, then Failed; and the same for a pod that succeeds.
func TestPodLifecycle(t *testing.T) {
	t.Parallel()
	type step struct {
		states    map[string]corev1.ContainerState
		wantPhase corev1.PodPhase
	}
	tests := []struct {
		name  string
		steps []step
		// exit code of container step at the end, -1 for none
		wantStepExit int32
	}{{
		name: "succeeded",
		steps: []step{
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Waiting("PodInitializing", "")}, corev1.PodPending},
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Running(), "step": kubetest.Waiting("PodInitializing", "")}, corev1.PodPending},
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Terminated(0, ""), "step": kubetest.Waiting("ContainerCreating", "")}, corev1.PodPending},
			{map[string]corev1.ContainerState{"step": kubetest.Running(), "sidecar": kubetest.Running()}, corev1.PodRunning},
			{map[string]corev1.ContainerState{"step": kubetest.Terminated(0, "")}, corev1.PodRunning},
			{map[string]corev1.ContainerState{"sidecar": kubetest.Terminated(0, "")}, corev1.PodSucceeded},
		},
		wantStepExit: 0,
	}, {
		name: "step fails while sidecar runs",
		steps: []step{
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Terminated(0, ""), "step": kubetest.Waiting("ErrImagePull", "pull access denied"), "sidecar": kubetest.Running()}, corev1.PodPending},
			{map[string]corev1.ContainerState{"step": kubetest.Waiting("ImagePullBackOff", "Back-off pulling image")}, corev1.PodPending},
			{map[string]corev1.ContainerState{"step": kubetest.Running()}, corev1.PodRunning},
			{map[string]corev1.ContainerState{"step": kubetest.Terminated(3, "")}, corev1.PodRunning},
			{map[string]corev1.ContainerState{"sidecar": kubetest.Terminated(137, "")}, corev1.PodFailed},
		},
		wantStepExit: 3,
	}, {
		name: "init container fails",
		steps: []step{
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Running()}, corev1.PodPending},
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Terminated(22, "")}, corev1.PodFailed},
		},
		wantStepExit: -1,
	}, {
		name: "config error",
		steps: []step{
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Terminated(0, ""), "step": kubetest.Waiting("CreateContainerConfigError", `secret "x" not found`)}, corev1.PodPending},
		},
		wantStepExit: -1,
	}, {
		name: "crash loop",
		steps: []step{
			{map[string]corev1.ContainerState{"workspace-init": kubetest.Terminated(0, ""), "step": kubetest.Waiting("CrashLoopBackOff", "back-off 10s")}, corev1.PodPending},
		},
		wantStepExit: -1,
	}}
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			name := fmt.Sprintf("lifecycle-%d", i)
			p := createPod(t, ctx, s.Client(), ns, stepPod(name))
			if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
				t.Fatalf("new pod: phase %q node %q, want Pending and unbound", p.Status.Phase, p.Spec.NodeName)
			}
			if err := k.Bind(ctx, ns, name); err != nil {
				t.Fatal(err)
			}
			p, err := s.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Spec.NodeName != k.NodeName() {
				t.Errorf("after Bind: spec.nodeName = %q, want %q", p.Spec.NodeName, k.NodeName())
			}
			for j, st := range tt.steps {
				p, err = k.SetContainers(ctx, ns, name, st.states)
				if err != nil {
					t.Fatalf("step %d: %v", j, err)
				}
				if p.Status.Phase != st.wantPhase {
					t.Errorf("step %d: phase = %q, want %q", j, p.Status.Phase, st.wantPhase)
				}
			}
			// What a client reading the pod sees, not just the update's reply.
			p, err = s.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := int32(-1)
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Name == "step" && cs.State.Terminated != nil {
					got = cs.State.Terminated.ExitCode
				}
			}
			if got != tt.wantStepExit {
				t.Errorf("step container exit code = %d, want %d (statuses %+v)", got, tt.wantStepExit, p.Status.ContainerStatuses)
			}
		})
	}
}

func TestTerminatedContainerCannotRestart(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns, AutoBind: true})
	ctx := testContext(t)
	createPod(t, ctx, s.Client(), ns, stepPod("once"))
	if _, err := k.WaitFor(ctx, ns, "once", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		t.Fatalf("AutoBind: %v", err)
	}
	if _, err := k.RunPod(ctx, ns, "once"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.SetContainer(ctx, ns, "once", "step", kubetest.Terminated(1, "")); err != nil {
		t.Fatal(err)
	}
	// The API server's own rule for restartPolicy Never.
	_, err := k.SetContainer(ctx, ns, "once", "step", kubetest.Running())
	if !apierrors.IsInvalid(err) {
		t.Errorf("terminated -> running: %v, want Invalid", err)
	}
}

// TestLogsFollow reads a log through the API server with follow and
// timestamps while the fake kubelet writes it.
func TestLogsFollow(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns, AutoBind: true})
	ctx := testContext(t)
	createPod(t, ctx, s.Client(), ns, stepPod("logs"))
	if _, err := k.WaitFor(ctx, ns, "logs", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		t.Fatal(err)
	}

	// Before the container runs the kubelet refuses, and the API server
	// passes its message on.
	if _, err := k.SetContainers(ctx, ns, "logs", map[string]corev1.ContainerState{
		"workspace-init": kubetest.Running(), "step": kubetest.Waiting("PodInitializing", ""),
	}); err != nil {
		t.Fatal(err)
	}
	// (Stream, not DoRaw: client-go's DoRaw does not decode the Status the
	// server sends for pods/log and says "rejected for an unknown reason".)
	_, err := s.Client().CoreV1().Pods(ns).GetLogs("logs", &corev1.PodLogOptions{Container: "step"}).Stream(ctx)
	if want := `container "step" in pod "logs" is waiting to start: PodInitializing`; !apierrors.IsBadRequest(err) || err.Error() != want {
		t.Errorf("logs of a waiting container: %v, want BadRequest %q", err, want)
	}

	if _, err := k.RunPod(ctx, ns, "logs"); err != nil {
		t.Fatal(err)
	}
	k.Log(ns, "logs", "step", "before")
	before := time.Now()
	ls := openLog(t, ctx, s.Client(), ns, "logs", &corev1.PodLogOptions{Container: "step", Follow: true, Timestamps: true})
	if err := k.WaitLogStreams(ctx, ns, "logs", "step", 1); err != nil {
		t.Fatal(err)
	}
	k.Log(ns, "logs", "step", "hello", "OUTPUT: {\"a\": 1}")
	var got []string
	for range 3 {
		ts, content, ok := strings.Cut(ls.next(t, ctx), " ")
		if !ok {
			t.Fatalf("line without timestamp prefix: %q", content)
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Errorf("timestamp %q: %v", ts, err)
		}
		if len(ts) != len(kubetest.TimestampFormat)-len("Z07:00")+1 {
			t.Errorf("timestamp %q is not fixed-width RFC 3339 nanoseconds in UTC", ts)
		}
		if at.After(time.Now()) || (content != "before" && at.Before(before)) {
			t.Errorf("timestamp %v of %q out of order", at, content)
		}
		got = append(got, content)
	}
	if want := `before|hello|OUTPUT: {"a": 1}`; strings.Join(got, "|") != want {
		t.Errorf("lines = %q, want %q", strings.Join(got, "|"), want)
	}
	// The step exits: the stream ends cleanly.
	if _, err := k.SetContainer(ctx, ns, "logs", "step", kubetest.Terminated(0, "")); err != nil {
		t.Fatal(err)
	}
	if err := ls.end(t, ctx); err != nil {
		t.Errorf("end of stream = %v, want clean EOF", err)
	}
	reqs := k.LogRequests(ns, "logs", "step")
	last := reqs[len(reqs)-1]
	if last.Get("follow") != "true" || last.Get("timestamps") != "true" {
		t.Errorf("kubelet got query %v, want follow=true&timestamps=true", last)
	}
}

// TestLogsOptions checks the non-follow options the kubelet honours.
func TestLogsOptions(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns, AutoBind: true})
	ctx := testContext(t)
	createPod(t, ctx, s.Client(), ns, stepPod("opts"))
	if _, err := k.WaitFor(ctx, ns, "opts", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RunPod(ctx, ns, "opts"); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	for i, l := range []string{"one", "two", "three", "four"} {
		k.LogAt(ns, "opts", "step", base.Add(time.Duration(i)*time.Second+300*time.Millisecond), l)
	}
	since := metav1.NewTime(base.Add(2 * time.Second))
	tests := []struct {
		name string
		opts corev1.PodLogOptions
		want string
	}{
		{"all", corev1.PodLogOptions{}, "one\ntwo\nthree\nfour\n"},
		{"tailLines", corev1.PodLogOptions{TailLines: ptr(int64(2))}, "three\nfour\n"},
		{"sinceTime", corev1.PodLogOptions{SinceTime: &since}, "three\nfour\n"},
		{"limitBytes", corev1.PodLogOptions{LimitBytes: ptr(int64(6))}, "one\ntw"},
		{"timestamps", corev1.PodLogOptions{TailLines: ptr(int64(1)), Timestamps: true},
			base.Add(3*time.Second+300*time.Millisecond).UTC().Format(kubetest.TimestampFormat) + " four\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := tt.opts
			opts.Container = "step"
			got, err := s.Client().CoreV1().Pods(ns).GetLogs("opts", &opts).DoRaw(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("GetLogs(%+v) = %q, want %q", tt.opts, got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestLogsDropAndResume cuts a follow stream at the kubelet and resumes it
// with sinceTime, as the runner must.
func TestLogsDropAndResume(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns, AutoBind: true})
	ctx := testContext(t)
	createPod(t, ctx, s.Client(), ns, stepPod("drop"))
	if _, err := k.WaitFor(ctx, ns, "drop", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RunPod(ctx, ns, "drop"); err != nil {
		t.Fatal(err)
	}
	sec := time.Now().Truncate(time.Second)
	k.LogAt(ns, "drop", "step", sec.Add(100*time.Millisecond), "a")

	ls := openLog(t, ctx, s.Client(), ns, "drop", &corev1.PodLogOptions{Container: "step", Follow: true, Timestamps: true})
	if err := k.WaitLogStreams(ctx, ns, "drop", "step", 1); err != nil {
		t.Fatal(err)
	}
	first := ls.next(t, ctx)
	ts, content, _ := strings.Cut(first, " ")
	if content != "a" {
		t.Fatalf("first line = %q, want a", first)
	}
	if n := k.DropLogStreams(ns, "drop", "step"); n != 1 {
		t.Errorf("DropLogStreams() = %d, want 1", n)
	}
	// The API server ignores the error copying from the kubelet and ends
	// its response normally: the client sees a clean EOF although the
	// container runs on. A runner must check the container state on EOF.
	if err := ls.end(t, ctx); err != nil {
		t.Logf("dropped stream ended with %v", err)
	}

	// Written while no one follows: one line in the same second as "a".
	k.LogAt(ns, "drop", "step", sec.Add(200*time.Millisecond), "b")
	k.LogAt(ns, "drop", "step", sec.Add(1200*time.Millisecond), "c")
	last, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatal(err)
	}
	since := metav1.NewTime(last)
	ls2 := openLog(t, ctx, s.Client(), ns, "drop", &corev1.PodLogOptions{Container: "step", Follow: true, SinceTime: &since})
	var got []string
	for range 3 {
		got = append(got, ls2.next(t, ctx))
	}
	// sinceTime has second precision and is inclusive: "a" comes again.
	if want := "a|b|c"; strings.Join(got, "|") != want {
		t.Errorf("resumed lines = %q, want %q", strings.Join(got, "|"), want)
	}
	reqs := k.LogRequests(ns, "drop", "step")
	if got, want := reqs[len(reqs)-1].Get("sinceTime"), sec.UTC().Format(time.RFC3339); got != want {
		t.Errorf("kubelet got sinceTime=%q, want %q", got, want)
	}
	k.EndLog(ns, "drop", "step")
	if err := ls2.end(t, ctx); err != nil {
		t.Errorf("end of resumed stream = %v, want clean EOF", err)
	}
}

// TestDeletion checks that the kubelet finishes graceful deletions, and
// that a slow one keeps the name taken.
func TestDeletion(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	cs := s.Client()

	t.Run("unbound pod goes at once", func(t *testing.T) {
		t.Parallel()
		ns := s.Namespace(t)
		ctx := testContext(t)
		createPod(t, ctx, cs, ns, stepPod("unbound"))
		if err := cs.CoreV1().Pods(ns).Delete(ctx, "unbound", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, "unbound", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after delete: %v, want NotFound", err)
		}
	})

	t.Run("kubelet finishes", func(t *testing.T) {
		t.Parallel()
		ns := s.Namespace(t)
		k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns, AutoBind: true})
		ctx := testContext(t)
		createPod(t, ctx, cs, ns, stepPod("gone"))
		if _, err := k.WaitFor(ctx, ns, "gone", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
			t.Fatal(err)
		}
		if _, err := k.RunPod(ctx, ns, "gone"); err != nil {
			t.Fatal(err)
		}
		if err := cs.CoreV1().Pods(ns).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := k.WaitForPodGone(ctx, ns, "gone"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("slow termination keeps the name", func(t *testing.T) {
		t.Parallel()
		ns := s.Namespace(t)
		k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns, AutoBind: true, DeletionDelay: -1})
		ctx := testContext(t)
		createPod(t, ctx, cs, ns, stepPod("slow"))
		if _, err := k.WaitFor(ctx, ns, "slow", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
			t.Fatal(err)
		}
		if _, err := k.RunPod(ctx, ns, "slow"); err != nil {
			t.Fatal(err)
		}
		if err := cs.CoreV1().Pods(ns).Delete(ctx, "slow", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		p, err := k.WaitFor(ctx, ns, "slow", func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil })
		if err != nil {
			t.Fatal(err)
		}
		if p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 30 {
			t.Errorf("deletionGracePeriodSeconds = %v, want 30", p.DeletionGracePeriodSeconds)
		}
		// The runner's retry problem: the same name is still taken.
		_, err = cs.CoreV1().Pods(ns).Create(ctx, stepPod("slow"), metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			t.Errorf("create while terminating: %v, want AlreadyExists", err)
		}
		k.FinishDeletion(ns, "slow")
		if err := k.WaitForPodGone(ctx, ns, "slow"); err != nil {
			t.Fatal(err)
		}
		createPod(t, ctx, cs, ns, stepPod("slow"))
	})
}

// TestEvicted finds the runner's pod by label and fails it the way an
// eviction does: phase Failed with a reason, containers not terminated.
func TestEvicted(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns})
	ctx := testContext(t)
	pod := stepPod("evicted-x7k2")
	pod.Labels["stroem.io/job-id"] = "0d8c9a1e"
	createPod(t, ctx, s.Client(), ns, stepPod("other"))
	createPod(t, ctx, s.Client(), ns, pod)
	p, err := k.WaitForPod(ctx, ns, "app=stroem-step,stroem.io/job-id=0d8c9a1e")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != pod.Name {
		t.Fatalf("WaitForPod() = %s, want %s", p.Name, pod.Name)
	}
	if err := k.Bind(ctx, ns, p.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RunPod(ctx, ns, p.Name); err != nil {
		t.Fatal(err)
	}
	p, err = k.SetPhase(ctx, ns, p.Name, corev1.PodFailed, "Evicted", "The node was low on resource: memory.")
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodFailed || p.Status.Reason != "Evicted" {
		t.Errorf("after SetPhase: phase %q reason %q, want Failed Evicted", p.Status.Phase, p.Status.Reason)
	}
	// A terminal phase is final, whatever the containers do next.
	p, err = k.SetContainer(ctx, ns, p.Name, "sidecar", kubetest.Terminated(0, ""))
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodFailed {
		t.Errorf("phase after a container update = %q, want Failed", p.Status.Phase)
	}
}
