package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

type env struct {
	srv *fakeserver.Server
	d   *delivery.Deliverer
	job string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := fakeserver.New(fakeserver.Options{})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	raw, _ := json.Marshal(map[string]any{"type": "script", "script": "true"})
	job := srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: raw}}})
	client := api.New(api.Options{BaseURL: hs.URL, Token: fakeserver.DefaultToken})
	return &env{srv: srv, job: job, d: &delivery.Deliverer{Root: t.TempDir(), Client: client, MaxAge: time.Hour}}
}

// spool leaves a spool as a dead or unlucky process would: one log line,
// the completion if given, created at created.
func (e *env) spool(t *testing.T, attempt, line, completion string, created time.Time) string {
	t.Helper()
	key := delivery.Key(e.job, "s", attempt)
	dir := filepath.Join(e.d.Root, key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"meta.json":  fmt.Sprintf(`{"job_id":%q,"step_name":"s","worker_id":"w","created":%q}`, e.job, created.UTC().Format(time.RFC3339Nano)),
		"logs.jsonl": fmt.Sprintf(`{"ts":"2026-01-01T00:00:00.000000000Z","stream":"stdout","line":%q}`+"\n", line),
	}
	if completion != "" {
		files["complete.json"] = completion
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return key
}

func (e *env) lines() []string {
	var out []string
	for _, l := range e.srv.Logs(e.job) {
		out = append(out, l.Line)
	}
	return out
}

func TestSupersededAttemptSendsLogsNotResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var withheld []string
	e.d.Withheld = func(r string) { withheld = append(withheld, r) }
	old := e.spool(t, "one", "from attempt one", `{"exit_code":0,"output":null,"error":null}`, time.Now())
	n, err := e.d.Supersede(t.Context(), e.job, "s", "two")
	if err != nil || n != 1 {
		t.Fatalf("Supersede() = %d, %v; want 1 attempt superseded", n, err)
	}
	if err := e.d.One(t.Context(), old, "cause"); err != nil {
		t.Fatalf("One() = %v", err)
	}
	if st, _ := e.srv.Step(e.job, "s"); st.Completes != 0 {
		t.Errorf("superseded attempt's result was sent (%d completes)", st.Completes)
	}
	if got := e.lines(); len(got) != 1 || got[0] != "from attempt one" {
		t.Errorf("lines = %q, want the superseded attempt's log", got)
	}
	if len(withheld) != 1 || withheld[0] != delivery.ReasonSuperseded {
		t.Errorf("withheld = %q, want [superseded]", withheld)
	}
	if _, err := os.Stat(filepath.Join(e.d.Root, old)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("superseded spool still on disk: %v", err)
	}
}

func TestStaleResultIsKeptNotSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.spool(t, "one", "old line", `{"exit_code":0,"output":null,"error":null}`, time.Now().Add(-2*time.Hour))
	n, err := e.d.Pending(t.Context(), "cause")
	if err != nil || n != 1 {
		t.Fatalf("Pending() = %d, %v", n, err)
	}
	if st, _ := e.srv.Step(e.job, "s"); st.Completes != 0 {
		t.Errorf("a result older than MaxAge was sent")
	}
	if _, err := os.Stat(filepath.Join(e.d.Root, "stale", key, "complete.json")); err != nil {
		t.Errorf("stale spool not kept for inspection: %v", err)
	}
	// Kept out of the pending set: the next pass does not see it again.
	if n, _ := e.d.Pending(t.Context(), "cause"); n != 0 {
		t.Errorf("second Pending() delivered %d, want 0", n)
	}
}

func TestDeadStepIsKilledThenReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var killed []string
	e.d.Kill = func(_ context.Context, h json.RawMessage) error { killed = append(killed, string(h)); return nil }
	key := e.spool(t, "one", "half way", "", time.Now())
	if err := delivery.SaveHandle(filepath.Join(e.d.Root, key), json.RawMessage(`{"kind":"local","pgid":42}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.d.One(t.Context(), key, "signal: killed"); err != nil {
		t.Fatal(err)
	}
	if len(killed) != 1 {
		t.Errorf("Kill called %d times, want once before reporting", len(killed))
	}
	st, _ := e.srv.Step(e.job, "s")
	if st.Status != "failed" || st.Error != delivery.DiedMessage("s", "signal: killed") {
		t.Errorf("step = %s %q, want failed with the died message", st.Status, st.Error)
	}
}

func TestDamagedCompletionIsReportedAsDied(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.spool(t, "one", "x", "", time.Now())
	// What a power cut can leave of an unsynced rename: an empty file.
	os.WriteFile(filepath.Join(e.d.Root, key, "complete.json"), nil, 0o600)
	if err := e.d.One(t.Context(), key, "power cut"); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.srv.Step(e.job, "s"); st.Status != "failed" || !strings.Contains(st.Error, "power cut") {
		t.Errorf("step = %s %q, want failed with the died message", st.Status, st.Error)
	}
}

func TestBusySpoolIsLeftAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.spool(t, "one", "x", `{"exit_code":0,"output":null,"error":null}`, time.Now())
	lock, err := e.d.Lock(key)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if err := e.d.One(t.Context(), key, "c"); !errors.Is(err, delivery.ErrBusy) {
		t.Errorf("One() on a locked spool = %v, want ErrBusy", err)
	}
	if n, err := e.d.Pending(t.Context(), "c"); n != 0 || err != nil {
		t.Errorf("Pending() = %d, %v; want the busy spool skipped", n, err)
	}
}

func TestKeysAreSafeAndDistinct(t *testing.T) {
	t.Parallel()
	names := []string{"s", "process[0]", "a/b", "..", strings.Repeat("ø", 200), strings.Repeat("x", 5000), ""}
	seen := map[string]string{}
	for _, n := range names {
		for _, attempt := range []string{"a1", "a2"} {
			k := delivery.Key("3f1c9a8e-0000-4000-8000-000000000000", n, attempt)
			if len(k)+len(".lock") > 255 || strings.ContainsAny(k, "/\x00") || k == "." || k == ".." {
				t.Errorf("Key(%.10q, %s) = %q: not a safe file name", n, attempt, k)
			}
			if prev, ok := seen[k]; ok {
				t.Errorf("Key collision: %.10q and %.10q", prev, n)
			}
			seen[k] = n
		}
	}
}

// TestUnansweredResultIsNotResentLate: a completion whose answers keep
// getting lost is resent only within the window after its first unanswered
// send (a later resend could land on the step's next attempt); it then
// counts as sent and the worker id is given up. Refusals that took no
// effect (503) are resent for as long as it takes.
func TestUnansweredResultIsNotResentLate(t *testing.T) {
	t.Parallel()
	completes := func(e *env) int {
		n := 0
		for _, r := range e.srv.Requests() {
			if strings.HasSuffix(r.Path, "/complete") {
				n++
			}
		}
		return n
	}
	t.Run("answers lost", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
			if strings.HasSuffix(r.URL.Path, "/complete") {
				return fakeserver.Fault{DropAnswer: true}
			}
			return fakeserver.Fault{}
		})
		var silenced []string
		e.d.Unanswered = func(id string) { silenced = append(silenced, id) }
		e.d.UnansweredWindow = 1500 * time.Millisecond
		e.d.Retry = api.Retry{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
		key := e.spool(t, "one", "x", `{"exit_code":0,"output":null,"error":null}`, time.Now())
		start := time.Now()
		if err := e.d.One(t.Context(), key, "c"); err != nil {
			t.Fatalf("One() = %v, want nil (counted as sent)", err)
		}
		if len(silenced) != 1 || silenced[0] != "w" {
			t.Errorf("Unanswered got %q, want the spool's worker id once", silenced)
		}
		if n := completes(e); n < 2 {
			t.Errorf("%d sends, want resends within the window", n)
		}
		// Generous slack for a busy machine: without the window the resends
		// go on until ctx ends, and One never returns.
		for _, r := range e.srv.Requests() {
			if late := r.Time.Sub(start); strings.HasSuffix(r.Path, "/complete") && late > e.d.UnansweredWindow+3*time.Second {
				t.Errorf("a resend %v after the first send, long after the %v window", late, e.d.UnansweredWindow)
			}
		}
		if _, err := os.Stat(filepath.Join(e.d.Root, key)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("spool still there (%v): the result must not be sent again by a later pass", err)
		}
	})
	t.Run("refused for now", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		var refused atomic.Int32
		e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
			if strings.HasSuffix(r.URL.Path, "/complete") && refused.Add(1) <= 8 {
				return fakeserver.Fault{Status: http.StatusServiceUnavailable}
			}
			return fakeserver.Fault{}
		})
		e.d.UnansweredWindow = time.Millisecond // would stop resends of lost answers at once
		e.d.Retry = api.Retry{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}
		key := e.spool(t, "one", "x", `{"exit_code":0,"output":null,"error":null}`, time.Now())
		if err := e.d.One(t.Context(), key, "c"); err != nil {
			t.Fatal(err)
		}
		if st, _ := e.srv.Step(e.job, "s"); st.Completes != 1 {
			t.Errorf("step completes = %d, want the result applied once after the 503s", st.Completes)
		}
	})
}
