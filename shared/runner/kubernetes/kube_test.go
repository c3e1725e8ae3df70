package kube_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	kubetest.Main(m)
}

type mapLookuper map[string]string

func (m mapLookuper) Lookup(k string) (string, bool) { v, ok := m[k]; return v, ok }

// kenv is a fake Strøm server, a real API server with a fake kubelet,
// and a worker configured for pod steps.
type kenv struct {
	t   *testing.T
	s   *kubetest.Server
	ns  string
	k   *kubetest.Kubelet
	srv *fakeserver.Server
	hs  *httptest.Server
	cfg *config.Config
	r   *kube.Runner
	rev string
}

func newKEnv(t *testing.T, kopts kubetest.KubeletOptions) *kenv {
	t.Helper()
	return newKEnvOn(t, kubetest.Start(t), kopts)
}

func newKEnvOn(t *testing.T, s *kubetest.Server, kopts kubetest.KubeletOptions) *kenv {
	t.Helper()
	ns := s.Namespace(t)
	kopts.Namespace = ns
	k := kubetest.NewKubelet(t, s, kopts)
	srv := fakeserver.New(fakeserver.Options{})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	rev, _ := srv.Revision(fakeserver.DefaultWorkspace)
	cfg, err := config.Load(config.LoadOptions{
		Env: mapLookuper{"STROEM__WORKER_TOKEN": fakeserver.DefaultToken},
		Flags: map[string]string{
			"server_url":                hs.URL,
			"workspace_dir":             t.TempDir(),
			"capabilities":              "script,kubernetes",
			"poll_interval_secs":        "0.05",
			"cancel_poll_interval_secs": "0.1",
			"cancel_grace_secs":         "3",
			"delivery_timeout_secs":     "600",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &kube.Runner{Config: s.Config(), Namespace: ns, ServerURL: cfg.ServerURL, WorkerToken: cfg.WorkerToken,
		Home: "home-" + ns, InitImage: "curl:test", RunnerImage: "runner:test", Log: testLogger()}
	return &kenv{t: t, s: s, ns: ns, k: k, srv: srv, hs: hs, cfg: cfg, r: r, rev: rev}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// ctxT is the test's context, ending a margin before go test's own
// deadline, so a hang is reported by the test that hung.
func ctxT(t *testing.T) context.Context {
	d, ok := t.Deadline()
	if !ok {
		return t.Context()
	}
	ctx, cancel := context.WithDeadline(t.Context(), d.Add(-10*time.Second))
	t.Cleanup(cancel)
	return ctx
}

// script adds a `type: script`, `runner: pod` step and returns its job.
func (e *kenv) script(step string, spec map[string]any, timeout int64) string {
	spec["type"] = "script"
	raw, _ := json.Marshal(spec)
	return e.srv.AddJob(fakeserver.JobSpec{TaskName: "build", Steps: []fakeserver.StepSpec{{
		StepName: step, ActionType: "script", Runner: "pod", ActionSpec: raw, TimeoutSecs: timeout, Revision: e.rev,
	}}})
}

// pod adds a `type: pod` step.
func (e *kenv) podStep(step, image string, spec map[string]any, timeout int64) string {
	spec["type"] = "pod"
	raw, _ := json.Marshal(spec)
	return e.srv.AddJob(fakeserver.JobSpec{TaskName: "build", Steps: []fakeserver.StepSpec{{
		StepName: step, ActionType: "pod", ActionImage: image, ActionSpec: raw, TimeoutSecs: timeout,
	}}})
}

func (e *kenv) runners() runner.Set {
	return runner.Set{runner.Local: &local.Runner{}, runner.Kubernetes: e.r}
}

// run is claim-and-run in this process.
func (e *kenv) run(ctx context.Context) (oneshot.Outcome, error) {
	return oneshot.Run(ctx, e.cfg, oneshot.Options{}, oneshot.Deps{Logger: testLogger(), Runners: e.runners()})
}

type outcome struct {
	out oneshot.Outcome
	err error
}

// start runs claim-and-run in the background.
func (e *kenv) start(ctx context.Context) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		out, err := e.run(ctx)
		ch <- outcome{out, err}
	}()
	return ch
}

func (e *kenv) wait(ctx context.Context, ch <-chan outcome) oneshot.Outcome {
	e.t.Helper()
	select {
	case o := <-ch:
		if o.err != nil {
			e.t.Fatalf("claim-and-run: %v", o.err)
		}
		if !o.out.Claimed {
			e.t.Fatal("claim-and-run claimed nothing")
		}
		return o.out
	case <-ctx.Done():
		e.t.Fatalf("claim-and-run did not end: %v", ctx.Err())
	}
	return oneshot.Outcome{}
}

// waitPod waits for the pod of job's step.
func (e *kenv) waitPod(ctx context.Context, job string) *corev1.Pod {
	e.t.Helper()
	p, err := e.k.WaitForPod(ctx, e.ns, kube.LabelApp+"="+kube.AppValue+","+kube.LabelJob+"="+job)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// waitRunning waits until the pod is bound, runs it and waits until the
// runner follows the step container's log.
func (e *kenv) waitRunning(ctx context.Context, p *corev1.Pod) {
	e.t.Helper()
	if _, err := e.k.WaitFor(ctx, e.ns, p.Name, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.k.RunPod(ctx, e.ns, p.Name); err != nil {
		e.t.Fatal(err)
	}
	if err := e.k.WaitLogStreams(ctx, e.ns, p.Name, "step", 1); err != nil {
		e.t.Fatal(err)
	}
}

func (e *kenv) terminate(ctx context.Context, pod string, code int32) {
	e.t.Helper()
	if _, err := e.k.SetContainer(ctx, e.ns, pod, "step", kubetest.Terminated(code, "")); err != nil {
		e.t.Fatal(err)
	}
}

func (e *kenv) step(job, name string) fakeserver.StepState {
	st, _ := e.srv.Step(job, name)
	return st
}

func (e *kenv) lines(job string) []string {
	var out []string
	for _, l := range e.srv.Logs(job) {
		out = append(out, l.Line)
	}
	return out
}

// waitGone waits until the pod and its Secret are deleted.
func (e *kenv) waitGone(ctx context.Context, name string) {
	e.t.Helper()
	if err := e.k.WaitForPodGone(ctx, e.ns, name); err != nil {
		e.t.Fatal(err)
	}
	_, err := e.s.Client().CoreV1().Secrets(e.ns).Get(ctx, name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		e.t.Errorf("secret %s after the step: %v, want NotFound", name, err)
	}
}

func exitCode(st fakeserver.StepState) int {
	if st.ExitCode == nil {
		return -999
	}
	return *st.ExitCode
}

func containerByName(list []corev1.Container, name string) *corev1.Container {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
