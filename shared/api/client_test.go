package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newClient(t *testing.T, url, token string) *api.Client {
	t.Helper()
	hc := api.NewHTTPClient(time.Second)
	t.Cleanup(hc.CloseIdleConnections)
	return api.New(api.Options{BaseURL: url, Token: token, HTTPClient: hc,
		Retry: api.Retry{Attempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond}})
}

func startServer(t *testing.T) (*fakeserver.Server, *api.Client) {
	t.Helper()
	srv := fakeserver.New(fakeserver.Options{})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return srv, newClient(t, hs.URL, fakeserver.DefaultToken)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	srv, c := startServer(t)
	ctx := t.Context()
	id, err := c.Register(ctx, api.RegisterRequest{Name: "w", Capabilities: []string{"script"}})
	if err != nil {
		t.Fatalf("Register() = %v", err)
	}
	if err := c.Heartbeat(ctx, id); err != nil {
		t.Fatalf("Heartbeat() = %v", err)
	}
	step, err := c.Claim(ctx, api.ClaimRequest{WorkerID: id, Capabilities: []string{"script"}})
	if err != nil || step != nil {
		t.Fatalf("Claim() on an empty queue = %v, %v, want nil, nil", step, err)
	}
	job := srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{
		StepName: "process[0]", ActionName: "a", TimeoutSecs: 7, Revision: "abc",
		ActionSpec: json.RawMessage(`{"type":"script","script":"echo hi","args":["x",1,"y"],"env":{"A":"1","B":2}}`),
	}}})
	step, err = c.Claim(ctx, api.ClaimRequest{WorkerID: id, Capabilities: []string{"script"}})
	if err != nil || step == nil {
		t.Fatalf("Claim() = %v, %v, want a step", step, err)
	}
	if diff := cmp.Diff([]string{job, "process[0]", "t", "script", "local", "abc"},
		[]string{step.JobID, step.StepName, step.TaskName, step.ActionType, step.Runner, step.Revision}); diff != "" {
		t.Errorf("claimed step (-want +got):\n%s", diff)
	}
	if step.TimeoutSecs != 7 {
		t.Errorf("TimeoutSecs = %d, want 7", step.TimeoutSecs)
	}
	spec, err := api.ParseActionSpec(step.ActionSpec)
	if err != nil {
		t.Fatalf("ParseActionSpec() = %v", err)
	}
	if diff := cmp.Diff([]string{"x", "y"}, spec.Args); diff != "" {
		t.Errorf("args drop non-strings (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"A": "1"}, spec.Env); diff != "" {
		t.Errorf("env drops non-strings (-want +got):\n%s", diff)
	}
	if err := c.Start(ctx, job, step.StepName, id); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	body := `{"step_name":"process[0]","lines":[{"ts":"2026-01-01T00:00:00.000000000Z","stream":"stdout","line":"hi"}]}`
	if err := c.PostLogs(ctx, job, []byte(body)); err != nil {
		t.Fatalf("PostLogs() = %v", err)
	}
	if cancelled, err := c.Cancelled(ctx, job); err != nil || cancelled {
		t.Fatalf("Cancelled() = %v, %v, want false, nil", cancelled, err)
	}
	srv.CancelJob(job)
	if cancelled, err := c.Cancelled(ctx, job); err != nil || !cancelled {
		t.Fatalf("Cancelled() after CancelJob = %v, %v, want true, nil", cancelled, err)
	}
	if err := c.Complete(ctx, job, step.StepName, api.CompleteRequest{ExitCode: 0, Output: json.RawMessage(`{"k":1}`)}); err != nil {
		t.Fatalf("Complete() = %v", err)
	}
	st, _ := srv.Step(job, "process[0]")
	if st.Status != "completed" || string(st.Output) != `{"k":1}` {
		t.Errorf("server step = %+v, want completed with output", st)
	}
	logs := srv.Logs(job)
	if len(logs) != 1 || logs[0].Line != "hi" || logs[0].Step != "process[0]" {
		t.Errorf("server logs = %+v, want one line 'hi' of process[0]", logs)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	srv, good := startServer(t)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	const wrong = "wrong-token-wrong-token-wrong-token-42"
	bad := newClient(t, hs.URL, wrong)
	_, err := bad.Register(t.Context(), api.RegisterRequest{Name: "w", Capabilities: []string{"script"}})
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("Register() with a wrong token = %v, want ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("error %q contains the token", err)
	}
	if api.IsTransient(err) {
		t.Errorf("IsTransient(401) = true, want false")
	}

	// 400 from the server (no capabilities) is permanent.
	_, err = good.Register(t.Context(), api.RegisterRequest{Name: "w", Capabilities: []string{}})
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !api.IsPermanent(err) {
		t.Errorf("Register() without capabilities = %v, want a permanent 400", err)
	}

	// Claim 422: the server failed the step; ErrClaimRejected.
	id, err := good.Register(t.Context(), api.RegisterRequest{Name: "w", Capabilities: []string{"script"}})
	if err != nil {
		t.Fatal(err)
	}
	srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", RenderFail: true,
		ActionSpec: json.RawMessage(`{"type":"script","script":"true"}`)}}})
	_, err = good.Claim(t.Context(), api.ClaimRequest{WorkerID: id, Capabilities: []string{"script"}})
	if !errors.Is(err, api.ErrClaimRejected) {
		t.Errorf("Claim() of a render failure = %v, want ErrClaimRejected", err)
	}

	// Nothing listening: ErrUnreachable, transient.
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	_, err = newClient(t, url, fakeserver.DefaultToken).Register(t.Context(), api.RegisterRequest{Name: "w", Capabilities: []string{"script"}})
	if !errors.Is(err, api.ErrUnreachable) || !api.IsTransient(err) {
		t.Errorf("Register() against a closed port = %v, want a transient ErrUnreachable", err)
	}
}

func TestRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	srv, c := startServer(t)
	var calls atomic.Int32
	srv.SetFault(func(r *http.Request) fakeserver.Fault {
		if r.URL.Path != "/worker/heartbeat" {
			return fakeserver.Fault{}
		}
		if calls.Add(1) <= 2 {
			return fakeserver.Fault{Status: http.StatusServiceUnavailable, Body: "busy"}
		}
		return fakeserver.Fault{}
	})
	if err := c.Heartbeat(t.Context(), "0b6c7c1e-6f1e-4b7e-9d8a-2f2f0f0d9a11"); err != nil {
		t.Fatalf("Heartbeat() after two 503s = %v, want success on the third try", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("heartbeat tries = %d, want 3", n)
	}
}

func TestGarbageReply(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>proxy error</html>"))
	}))
	t.Cleanup(hs.Close)
	_, err := newClient(t, hs.URL, fakeserver.DefaultToken).Claim(t.Context(), api.ClaimRequest{WorkerID: "x", Capabilities: []string{"script"}})
	if !errors.Is(err, api.ErrBadResponse) {
		t.Errorf("Claim() with an HTML reply = %v, want ErrBadResponse", err)
	}
}

func TestPathEscaping(t *testing.T) {
	t.Parallel()
	paths := make(chan string, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.EscapedPath()
		w.Write([]byte(`{"status":"ok"}`))
	}))
	t.Cleanup(hs.Close)
	c := newClient(t, hs.URL, fakeserver.DefaultToken)
	if err := c.Start(t.Context(), "5f0c3a9e-2a7b-4c1d-9a55-0a4b1f7e9c21", "my step/1", "w"); err != nil {
		t.Fatal(err)
	}
	if got, want := <-paths, "/worker/jobs/5f0c3a9e-2a7b-4c1d-9a55-0a4b1f7e9c21/steps/my%20step%2F1/start"; got != want {
		t.Errorf("path = %q, want %q", got, want)
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	r := api.Retry{Initial: 100 * time.Millisecond, Max: time.Second}
	for attempt, max := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 10: time.Second} {
		for range 20 {
			if d := r.Delay(attempt); d < max/2 || d > max {
				t.Errorf("Delay(%d) = %v, want within [%v, %v]", attempt, d, max/2, max)
			}
		}
	}
}
