package oneshot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	t   *testing.T
	srv *fakeserver.Server
	hs  *httptest.Server
	cfg *config.Config
}

type mapLookuper map[string]string

func (m mapLookuper) Lookup(k string) (string, bool) { v, ok := m[k]; return v, ok }

func newEnv(t *testing.T, flags map[string]string) *env {
	t.Helper()
	srv := fakeserver.New(fakeserver.Options{})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	all := map[string]string{
		"server_url":                hs.URL,
		"workspace_dir":             t.TempDir(),
		"poll_interval_secs":        "0.05",
		"cancel_poll_interval_secs": "0.1",
		"cancel_grace_secs":         "1",
		// The product's default: how long delivery takes on a busy machine
		// is not the tests' to guess; a test about it sets its own.
		"delivery_timeout_secs": "600",
	}
	for k, v := range flags {
		all[k] = v
	}
	cfg, err := config.Load(config.LoadOptions{Env: mapLookuper{"STROEM__WORKER_TOKEN": fakeserver.DefaultToken}, Flags: all})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, hs: hs, cfg: cfg}
}

func (e *env) job(spec map[string]any, timeout int64) string {
	spec["type"] = "script"
	raw, _ := json.Marshal(spec)
	return e.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: raw, TimeoutSecs: timeout}}})
}

func (e *env) run(ctx context.Context, opts oneshot.Options) (oneshot.Outcome, error) {
	return oneshot.Run(ctx, e.cfg, opts, oneshot.Deps{
		Logger:  slog.New(slog.NewTextHandler(testLog, nil)),
		Environ: append(os.Environ(), "STROEM__WORKER_TOKEN="+fakeserver.DefaultToken),
	})
}

func (e *env) step(job string) fakeserver.StepState {
	st, _ := e.srv.Step(job, "s")
	return st
}

func (e *env) lines(job string) []string {
	var out []string
	for _, l := range e.srv.Logs(job) {
		out = append(out, l.Line)
	}
	return out
}

func (e *env) waitLogged(ctx context.Context, job, line string) {
	e.t.Helper()
	err := e.srv.WaitFor(ctx, func(s *fakeserver.Server) bool {
		for _, l := range s.Logs(job) {
			if l.Line == line {
				return true
			}
		}
		return false
	})
	if err != nil {
		e.t.Fatalf("waiting for line %q: %v", line, err)
	}
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

// alive reports whether pid exists (and is not a zombie).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+2:], "Z")
}

func readPids(t *testing.T, path string) []int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n)
	}
	return pids
}

func TestCancellationStopsTheProcessGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	job := e.job(map[string]any{"script": "trap 'echo got TERM; exit 143' TERM; echo ready; while :; do sleep 0.05; done"}, 0)
	ctx := ctxT(t)
	done := make(chan oneshot.Outcome, 1)
	go func() { out, _ := e.run(ctx, oneshot.Options{}); done <- out }()
	e.waitLogged(ctx, job, "ready")
	e.srv.CancelJob(job)
	out := <-done
	st := e.step(job)
	if st.Status != "failed" || !strings.HasSuffix(st.Error, "Job cancelled") || *st.ExitCode != -1 {
		t.Errorf("cancelled step = %s exit %v %q, want failed, -1, ending 'Job cancelled'", st.Status, st.ExitCode, st.Error)
	}
	if !out.Delivered {
		t.Errorf("outcome not delivered: %+v", out)
	}
	found := false
	for _, l := range e.lines(job) {
		found = found || l == "got TERM"
	}
	if !found {
		t.Errorf("lines = %q, want the step's TERM trap output (SIGTERM before SIGKILL)", e.lines(job))
	}
}

func TestTimeoutKillsStubbornTreeAndReportsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	dir := t.TempDir()
	// The step forks a child that ignores SIGTERM, and a grandchild that
	// escapes with setsid and ignores SIGTERM too.
	script := fmt.Sprintf(`trap '' TERM
sh -c 'trap "" TERM; while :; do sleep 0.05; done' &
echo $! >> %[1]s/pids
setsid sh -c 'trap "" TERM; echo $$ >> %[1]s/pids; while :; do sleep 0.05; done' &
while [ "$(wc -l < %[1]s/pids)" -lt 2 ]; do sleep 0.01; done
echo $$ >> %[1]s/pids
echo ready
while :; do sleep 0.05; done`, dir)
	job := e.job(map[string]any{"script": script}, 1)
	start := time.Now()
	out, err := e.run(ctxT(t), oneshot.Options{})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	st := e.step(job)
	if st.Error != "Step timed out after 1s" || out.ExitCode != -1 {
		t.Errorf("step = %q exit %d, want 'Step timed out after 1s', -1", st.Error, out.ExitCode)
	}
	// "At once" means when the tree is dead, not after a fixed wait (the
	// reference worker waits 10 s more): a generous bound that only a
	// fixed extra wait or a hang would break.
	if bound := 1*time.Second + e.cfg.CancelGrace() + 8*time.Second; took > bound {
		t.Errorf("timed-out step reported %v after the run began, want within %v (1 s timeout + 1 s grace + slack)", took, bound)
	}
	for _, pid := range readPids(t, filepath.Join(dir, "pids")) {
		if alive(pid) {
			t.Errorf("process %d the step started is still alive", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestShutdownCancelsAndReports(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	job := e.job(map[string]any{"script": "echo ready; sleep 300"}, 0)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { _, err := e.run(ctx, oneshot.Options{}); done <- err }()
	e.waitLogged(ctxT(t), job, "ready")
	cancel() // what SIGTERM does through main's NotifyContext
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := e.step(job); st.Status != "failed" || !strings.HasSuffix(st.Error, "Worker shutting down") {
		t.Errorf("step = %s %q, want failed 'Worker shutting down'", st.Status, st.Error)
	}
}

func TestDeadlineStopsStepInTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	job := e.job(map[string]any{"script": "echo ready; sleep 300"}, 0)
	out, err := e.run(ctxT(t), oneshot.Options{HardDeadline: time.Now().Add(3 * time.Second), Reserve: 1500 * time.Millisecond, DeadlineMessage: "Lambda deadline reached"})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.step(job); !strings.HasSuffix(st.Error, "Lambda deadline reached") || !out.Delivered {
		t.Errorf("step = %q, delivered %v; want it stopped with 'Lambda deadline reached' and delivered", st.Error, out.Delivered)
	}
}

func TestHostileOutput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		check  func(t *testing.T, lines []string)
	}{
		{"100 MB line", `head -c 104857600 /dev/zero | tr '\0' 'x'; echo; echo after`, func(t *testing.T, lines []string) {
			total := 0
			for _, l := range lines[:len(lines)-1] {
				if len(l) > 64<<10 {
					t.Fatalf("a line of %d bytes, over the 64 KiB cap", len(l))
				}
				total += len(l)
			}
			if total != 100<<20 || lines[len(lines)-1] != "after" {
				t.Errorf("delivered %d bytes of the long line then %q, want %d then 'after'", total, lines[len(lines)-1], 100<<20)
			}
		}},
		{"binary junk", `printf 'a\000b\377\376c\n\033[31mred\r\n'`, func(t *testing.T, lines []string) {
			if len(lines) != 2 || lines[0] != "a\x00b\uFFFDc" || lines[1] != "\x1b[31mred" {
				t.Errorf("lines = %q", lines)
			}
		}},
		{"stdout closed early, still running", `echo before; exec 1>&-; sleep 0.3; echo on stderr >&2`, func(t *testing.T, lines []string) {
			if strings.Join(lines, "|") != "before|on stderr" {
				t.Errorf("lines = %q", lines)
			}
		}},
		{"grandchild keeps the pipe open", `(sleep 300; echo never) & echo main done`, func(t *testing.T, lines []string) {
			if strings.Join(lines, "|") != "main done" {
				t.Errorf("lines = %q", lines)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			job := e.job(map[string]any{"script": tt.script}, 0)
			if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
				t.Fatal(err)
			}
			if st := e.step(job); st.Status != "completed" {
				t.Fatalf("step = %s %q, want completed", st.Status, st.Error)
			}
			tt.check(t, e.lines(job))
		})
	}
}

func TestSecretsAreMaskedAndTokenNotPassed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	script := `echo "db=$DB_PASSWORD"; echo "multi=$SSH_KEY"; echo "token=$STROEM__WORKER_TOKEN"; echo "plain=$REGION"; echo "$DB_PASSWORD" >&2; exit 1`
	job := e.job(map[string]any{"script": script, "env": map[string]string{
		"DB_PASSWORD": "hunter2-hunter2", "SSH_KEY": "line-one-secret\nline-two-secret", "REGION": "eu-north-1"}}, 0)
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	// Streams are kept apart; their interleaving is by read time.
	var stdout, stderr []string
	for _, l := range e.srv.Logs(job) {
		if l.Stream == "stdout" {
			stdout = append(stdout, l.Line)
		} else {
			stderr = append(stderr, l.Line)
		}
	}
	if got, want := strings.Join(stdout, "\n"), "db=***\nmulti=***\n***\ntoken=\nplain=eu-north-1"; got != want {
		t.Errorf("stdout lines:\n%s\nwant:\n%s", got, want)
	}
	if got := strings.Join(stderr, "\n"); got != "***" {
		t.Errorf("stderr lines = %q, want the masked secret", got)
	}
	if st := e.step(job); strings.Contains(st.Error, "hunter2") {
		t.Errorf("the completion error leaks the secret: %q", st.Error)
	}
	for _, r := range e.srv.Requests() {
		if bytes.Contains(r.Body, []byte(fakeserver.DefaultToken)) {
			t.Errorf("%s %s carries the worker token in its body", r.Method, r.Path)
		}
	}
}

// TestUndeliveredResultIsSpooledAndDeliveredNextRun: the server goes down
// after the step started; the run exits with ErrNotDelivered and keeps
// the spool; the next run delivers logs and result before claiming.
func TestUndeliveredResultIsSpooledAndDeliveredNextRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]string{"delivery_timeout_secs": "1"})
	dir := t.TempDir()
	job := e.job(map[string]any{"script": fmt.Sprintf("echo one; while [ ! -e %s/go ]; do sleep 0.02; done; echo two", dir)}, 0)
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() { _, err := e.run(ctx, oneshot.Options{}); done <- err }()
	e.waitLogged(ctx, job, "one")
	e.srv.Down(true)
	os.WriteFile(filepath.Join(dir, "go"), nil, 0o600)
	err := <-done
	if !errors.Is(err, oneshot.ErrNotDelivered) {
		t.Fatalf("Run() with the server down = %v, want ErrNotDelivered", err)
	}
	if st := e.step(job); st.Completes != 0 {
		t.Fatalf("step completed while the server was down: %+v", st)
	}
	e.srv.Down(false)
	out, err := e.run(ctx, oneshot.Options{})
	if err != nil || out.Claimed {
		t.Fatalf("second Run() = %+v, %v; want no error and no new claim", out, err)
	}
	st := e.step(job)
	if st.Status != "completed" || st.Completes != 1 {
		t.Errorf("step after redelivery = %s with %d completes, want completed once", st.Status, st.Completes)
	}
	if got := strings.Join(e.lines(job), ","); got != "one,two" {
		t.Errorf("lines = %s, want one,two", got)
	}
}

// TestFaultInjection: 30% of requests fail with 503, others are slow or
// dropped; several steps of numbered lines all arrive whole.
func TestFaultInjection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	failures := fakeserver.RandomFailures(0.3, 7, http.StatusServiceUnavailable)
	drops := fakeserver.RandomFailures(0.05, 11, 0)
	e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
		if f := failures(r); f.Status != 0 {
			return f
		}
		if f := drops(r); f.Drop {
			return f
		}
		return fakeserver.Fault{Delay: time.Millisecond}
	})
	const steps, lines = 4, 3000
	var jobs []string
	for range steps {
		jobs = append(jobs, e.job(map[string]any{"script": fmt.Sprintf("seq 1 %d", lines)}, 0))
	}
	for range steps {
		out, err := e.run(ctxT(t), oneshot.Options{Wait: 30 * time.Second})
		if err != nil || !out.Claimed {
			t.Fatalf("Run() = %+v, %v", out, err)
		}
	}
	for _, job := range jobs {
		st := e.step(job)
		if st.Status != "completed" {
			t.Errorf("job %s: %s, want completed", job, st.Status)
		}
		got := e.lines(job)
		seen := map[string]bool{}
		for _, l := range got {
			seen[l] = true
		}
		for i := 1; i <= lines; i++ {
			if !seen[strconv.Itoa(i)] {
				t.Fatalf("job %s: line %d lost (%d lines delivered)", job, i, len(got))
			}
		}
	}
}

func TestNoWorkAndWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	start := time.Now()
	out, err := e.run(ctxT(t), oneshot.Options{Wait: 300 * time.Millisecond})
	if err != nil || out.Claimed {
		t.Fatalf("Run() on an empty queue = %+v, %v", out, err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Errorf("Run() returned before --wait was over")
	}
	// The id is persisted: the next run does not register again.
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Workers()); n != 1 {
		t.Errorf("%d worker rows after two runs, want 1", n)
	}
}

// clock is a settable time source for the fake server's recovery rules.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestScaleToZero: a claim-and-run scheduled every 100 s (here on a fake
// clock) keeps its persisted worker row active through the server's 120 s
// heartbeat timeout, so ready steps are not failed for want of a worker;
// without runs, the row goes inactive and they are (contract §8).
func TestScaleToZero(t *testing.T) {
	t.Parallel()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv := fakeserver.New(fakeserver.Options{Now: clk.Now})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e := newEnv(t, map[string]string{"server_url": hs.URL})
	e.srv = srv
	ctx := ctxT(t)
	for i := range 3 {
		if i > 0 {
			clk.Add(100 * time.Second)
			srv.Sweep()
		}
		if _, err := e.run(ctx, oneshot.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	workers := srv.Workers()
	if len(workers) != 1 || workers[0].Status != fakeserver.WorkerActive {
		t.Fatalf("after three runs 100 s apart: workers = %+v, want one active row", workers)
	}
	job := e.job(map[string]any{"script": "true"}, 0)
	clk.Add(40 * time.Second) // older than the 30 s unmatched-step limit
	srv.Sweep()
	if st := e.step(job); st.Status != "ready" {
		t.Fatalf("step with an active matching worker = %s %q, want still ready", st.Status, st.Error)
	}
	// No run for over 120 s: the row goes inactive and the next ready step
	// is failed by the sweep.
	clk.Add(130 * time.Second)
	srv.Sweep()
	if st := e.step(job); st.Status != "failed" || !strings.Contains(st.Error, "No active worker") {
		t.Errorf("step after the worker went silent = %s %q, want failed for want of a worker", st.Status, st.Error)
	}
}

// testLog receives the workers' own logs: STROEM_TEST_LOG=1 shows them.
var testLog = func() io.Writer {
	if os.Getenv("STROEM_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}()
