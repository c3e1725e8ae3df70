package kube_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	"github.com/stroem-worker/stroem-worker/supervisor"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRetryWhileOldPodTerminates: a step claimed again while its first
// attempt's pod is still Terminating gets a pod of its own name.
func TestRetryWhileOldPodTerminates(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true, DeletionDelay: -1})
	ctx := ctxT(t)
	// With a sidecar the pod is not terminal when the step ends, so its
	// deletion takes the kubelet (a terminal pod goes at once).
	job := e.script("s", map[string]any{"script": "exit 1", "manifest": map[string]any{"spec": map[string]any{
		"containers": []any{map[string]any{"name": "proxy", "image": "envoy:test"}}}}}, 0)
	done := e.start(ctx)
	first := e.waitPod(ctx, job)
	e.waitRunning(ctx, first)
	e.terminate(ctx, first.Name, 1)
	e.wait(ctx, done)
	// A pod that ran on a node stays Terminating until its kubelet ends it.
	if _, err := e.k.WaitFor(ctx, e.ns, first.Name, func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil }); err != nil {
		t.Fatal(err)
	}
	if !e.srv.Requeue(job, "s") {
		t.Fatal("requeue failed")
	}
	done = e.start(ctx)
	second, err := e.k.WaitForPod(ctx, e.ns, kube.LabelJob+"="+job+","+kube.LabelAttempt+"!="+first.Labels[kube.LabelAttempt])
	if err != nil {
		t.Fatal(err)
	}
	if second.Name == first.Name {
		t.Fatalf("the retry's pod has the first attempt's name %s", first.Name)
	}
	e.waitRunning(ctx, second)
	e.terminate(ctx, second.Name, 0)
	if out := e.wait(ctx, done); !out.Succeeded() {
		t.Errorf("second attempt: %+v, want success beside the terminating pod", out)
	}
	e.k.FinishDeletion(e.ns, first.Name)
	e.k.FinishDeletion(e.ns, second.Name)
	e.waitGone(ctx, first.Name)
	e.waitGone(ctx, second.Name)
}

// TestCancel: a cancelled job's pod is deleted with cancel_grace_secs as
// its grace, and the step is reported once the pod is gone, with what it
// printed meanwhile.
func TestCancel(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true, DeletionDelay: -1})
	ctx := ctxT(t)
	job := e.script("s", map[string]any{"script": "sleep 1000"}, 0)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	e.waitRunning(ctx, p)
	e.k.Log(e.ns, p.Name, "step", "working")
	e.srv.CancelJob(job)
	deleting, err := e.k.WaitFor(ctx, e.ns, p.Name, func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil })
	if err != nil {
		t.Fatal(err)
	}
	if g := deleting.DeletionGracePeriodSeconds; g == nil || *g != 3 {
		t.Errorf("deletion grace = %v, want cancel_grace_secs 3", g)
	}
	e.k.Log(e.ns, p.Name, "step", "got SIGTERM, cleaning up")
	if st := e.step(job, "s"); st.Completes != 0 {
		t.Errorf("step reported (%+v) while its pod is still terminating", st)
	}
	e.k.FinishDeletion(e.ns, p.Name)
	out := e.wait(ctx, done)
	st := e.step(job, "s")
	if out.ExitCode != -1 || !strings.HasSuffix(st.Error, "Job cancelled") {
		t.Errorf("exit %d error %q, want -1 and Job cancelled", out.ExitCode, st.Error)
	}
	if got := e.lines(job); !contains(got, "got SIGTERM, cleaning up") {
		t.Errorf("logs = %q, want the lines printed during the grace", got)
	}
	e.waitGone(ctx, p.Name)
}

// TestTimeout: a step past timeout_secs is stopped by the worker (its pod
// deleted) and reported timed out.
func TestTimeout(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.podStep("s", "alpine:3", map[string]any{"cmd": "sleep 1000"}, 1)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	if d := p.Spec.ActiveDeadlineSeconds; d == nil || *d != 1+3+60 {
		t.Errorf("activeDeadlineSeconds = %v, want 64", d)
	}
	// Run it if the timeout leaves time to; the step may as well time out
	// while Pending on a busy machine, which is the same to the runner.
	_, _ = e.k.RunPod(ctx, e.ns, p.Name)
	out := e.wait(ctx, done)
	st := e.step(job, "s")
	if out.ExitCode != -1 || st.Error != "Step timed out after 1s" {
		t.Errorf("exit %d error %q, want -1 and Step timed out after 1s", out.ExitCode, st.Error)
	}
	e.waitGone(ctx, p.Name)
}

// TestLogReconnect: a follow stream dropped by the kubelet looks like a
// clean end of the log through the API server; the runner sees the step
// still runs, reconnects with sinceTime, and sends every line once,
// repeated lines with their own timestamps included.
func TestLogReconnect(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.podStep("s", "alpine:3", map[string]any{"cmd": "true"}, 0)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	e.waitRunning(ctx, p)
	sec := time.Now().Truncate(time.Second)
	e.k.LogAt(e.ns, p.Name, "step", sec.Add(100*time.Millisecond), "a")
	e.k.LogAt(e.ns, p.Name, "step", sec.Add(200*time.Millisecond), "same")
	waitLine(t, ctx, e, job, "same")
	if n := e.k.DropLogStreams(e.ns, p.Name, "step"); n != 1 {
		t.Fatalf("dropped %d streams, want 1", n)
	}
	// Written while nobody follows, in the same second as what was read.
	e.k.LogAt(e.ns, p.Name, "step", sec.Add(300*time.Millisecond), "same")
	e.k.LogAt(e.ns, p.Name, "step", sec.Add(400*time.Millisecond), "b")
	if err := e.k.WaitLogStreams(ctx, e.ns, p.Name, "step", 1); err != nil {
		t.Fatal(err)
	}
	e.k.LogAt(e.ns, p.Name, "step", sec.Add(1500*time.Millisecond), "c")
	waitLine(t, ctx, e, job, "c")
	reqs := e.k.LogRequests(e.ns, p.Name, "step")
	e.terminate(ctx, p.Name, 0)
	e.wait(ctx, done)
	if got, want := strings.Join(e.lines(job), "|"), "a|same|same|b|c"; got != want {
		t.Errorf("lines = %q, want %q", got, want)
	}
	// The cut stream may still have carried some of the lines written
	// around the drop: the reconnect starts at the second of the last
	// line read, whichever that was.
	if len(reqs) < 2 || reqs[1].Get("sinceTime") < sec.UTC().Format(time.RFC3339) {
		t.Errorf("log requests %v, want a reconnect with sinceTime from %s on", reqs, sec.UTC().Format(time.RFC3339))
	}
}

func waitLine(t *testing.T, ctx context.Context, e *kenv, job, line string) {
	t.Helper()
	// Lines reach the server in shipped batches; waiting for one is a
	// wait for the runner to have read it.
	if err := e.srv.WaitFor(ctx, func(*fakeserver.Server) bool { return contains(e.lines(job), line) }); err != nil {
		t.Fatalf("waiting for line %q: %v", line, err)
	}
}

// TestWorkerKilledThenRestart: a worker SIGKILLed mid-step leaves its pod
// running; the next run on the same home delivers the step as failed and
// deletes the pod (by the handle in the spool), and a pod whose spool is
// gone is swept by its labels.
func TestWorkerKilledThenRestart(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.script("s", map[string]any{"script": "sleep 1000"}, 0)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubetest.WriteKubeconfig(kc, e.s.Config()); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childServer+"="+e.hs.URL, childWorkspace+"="+e.cfg.WorkspaceDir,
		childKubeconfig+"="+kc, childNamespace+"="+e.ns, childHome+"="+e.r.Home)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	p := e.waitPod(ctx, job)
	e.waitRunning(ctx, p) // the child follows the log: it is past creating everything
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if _, err := e.s.Client().CoreV1().Pods(e.ns).Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the killed worker's pod: %v, want it still there", err)
	}

	// A leftover nobody has a handle for: a pod of this home whose spool
	// is gone. And one of another home, which must stay.
	orphan := leftover(t, ctx, e, "orphan", e.r.Home, "x0-orphan")
	foreign := leftover(t, ctx, e, "foreign", "home-elsewhere", "x0-foreign")

	out, err := e.run(ctx)
	if err != nil || out.Claimed {
		t.Fatalf("restart: %+v, %v; want no new claim", out, err)
	}
	st := e.step(job, "s")
	if st.Status != "failed" || !strings.HasPrefix(st.Error, "worker process for step s died") {
		t.Errorf("step %s %q, want failed by the dead worker's spool", st.Status, st.Error)
	}
	e.waitGone(ctx, p.Name)
	e.waitGone(ctx, orphan)
	if _, err := e.s.Client().CoreV1().Pods(e.ns).Get(ctx, foreign, metav1.GetOptions{}); err != nil {
		t.Errorf("another home's pod: %v, want it kept", err)
	}
}

// leftover creates a pod labelled as the runner labels its own.
func leftover(t *testing.T, ctx context.Context, e *kenv, name, home, key string) string {
	t.Helper()
	_, err := e.s.Client().CoreV1().Pods(e.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:      map[string]string{kube.LabelApp: kube.AppValue, kube.LabelHome: home},
			Annotations: map[string]string{kube.AnnotationSpool: key}},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "step", Image: "x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// TestSweepSkipsLiveSteps: a pod whose spool a live worker process holds
// is not a leftover.
func TestSweepSkipsLiveSteps(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{})
	ctx := ctxT(t)
	d := &delivery.Deliverer{Root: delivery.Root(e.cfg.WorkspaceDir)}
	live := leftover(t, ctx, e, "live", e.r.Home, "x0-live")
	dead := leftover(t, ctx, e, "dead", e.r.Home, "x0-dead")
	lock, err := d.Lock("x0-live")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	n, err := e.r.Sweep(ctx, d.Own)
	if err != nil || n != 1 {
		t.Errorf("Sweep() = %d, %v; want 1", n, err)
	}
	if _, err := e.s.Client().CoreV1().Pods(e.ns).Get(ctx, live, metav1.GetOptions{}); err != nil {
		t.Errorf("live step's pod: %v, want kept", err)
	}
	if _, err := e.s.Client().CoreV1().Pods(e.ns).Get(ctx, dead, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dead step's pod: %v, want deleted", err)
	}
}

// TestSuperviseSweepsAtStart: supervise deletes its home's leftovers
// before it is ready to claim.
func TestSuperviseSweepsAtStart(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{})
	ctx := ctxT(t)
	left := leftover(t, ctx, e, "left", e.r.Home, "x0-left")
	sctx, stop := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- supervisor.Run(sctx, e.cfg, supervisor.Deps{Logger: testLogger(), Runners: e.runners(),
			Ready: func(string, string) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("supervise ended: %v", err)
	}
	_, err := e.s.Client().CoreV1().Pods(e.ns).Get(ctx, left, metav1.GetOptions{})
	stop()
	if err := <-done; err != nil {
		t.Errorf("supervise: %v", err)
	}
	if !apierrors.IsNotFound(err) {
		t.Errorf("leftover pod once supervise is ready: %v, want deleted", err)
	}
}
