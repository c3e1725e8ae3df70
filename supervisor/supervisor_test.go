package supervisor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"github.com/stroem-worker/stroem-worker/supervisor"
	"go.uber.org/goleak"
)

// binary is the real stroem-worker, built once for these tests: the
// supervisor forks it for every step.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "supervisor-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "stroem-worker")
	build := exec.Command("go", "build", "-o", binary, "../cmd/stroem-worker")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building stroem-worker:", err)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		code = m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// harness is a supervisor running against a fake server.
type harness struct {
	t       *testing.T
	srv     *fakeserver.Server
	url     string
	cfg     *config.Config
	signals chan os.Signal
	stop    context.CancelFunc
	done    chan error
	ready   chan [2]string
	// childLog receives the children's own log output.
	childLog *os.File
}

func newHarness(t *testing.T, overrides map[string]string) *harness {
	t.Helper()
	srv := fakeserver.New(fakeserver.Options{})
	srv.AddWorkspace(fakeserver.DefaultWorkspace, "", fakeserver.EmptyTarball())
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	flags := map[string]string{
		"server_url":                hs.URL,
		"workspace_dir":             t.TempDir(),
		"poll_interval_secs":        "0.05",
		"cancel_poll_interval_secs": "0.1",
		"cancel_grace_secs":         "2",
		"max_concurrent":            "2",
		"listen":                    "127.0.0.1:0",
	}
	for k, v := range overrides {
		flags[k] = v
	}
	cfg, err := config.Load(config.LoadOptions{
		Path:  filepath.Join(t.TempDir(), "none.yaml"),
		Env:   mapLookuper{"STROEM__WORKER_TOKEN": fakeserver.DefaultToken},
		Flags: flags,
	})
	if err != nil {
		t.Fatalf("config.Load() = %v", err)
	}
	childLog, err := os.Create(filepath.Join(t.TempDir(), "children.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(childLog.Name())
			t.Logf("children's log:\n%s", data)
		}
		childLog.Close()
	})
	return &harness{t: t, srv: srv, url: hs.URL, cfg: cfg, signals: make(chan os.Signal, 4),
		done: make(chan error, 1), ready: make(chan [2]string, 1), childLog: childLog}
}

func (h *harness) start() (workerID, listen string) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() {
		h.done <- supervisor.Run(ctx, h.cfg, supervisor.Deps{
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			ChildStderr: h.childLog,
			Executable:  binary,
			Argv0:       binary,
			Signals:     h.signals,
			Ready:       func(id, addr string) { h.ready <- [2]string{id, addr} },
		})
	}()
	select {
	case r := <-h.ready:
		return r[0], r[1]
	case err := <-h.done:
		h.t.Fatalf("supervisor.Run() ended before ready: %v", err)
	case <-untilDeadline(h.t):
		h.t.Fatal("supervisor not ready before the test's deadline")
	}
	return "", ""
}

// signal simulates a stop signal: the first also ends Run's context, as
// signal.NotifyContext does in main.
func (h *harness) signal() {
	h.signals <- syscall.SIGTERM
	h.stop()
}

func (h *harness) wait() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-untilDeadline(h.t):
		h.t.Fatal("supervisor did not return before the test's deadline")
		return nil
	}
}

// untilDeadline fires a margin before go test's deadline: how long work
// takes on a busy machine is not the tests' to guess.
func untilDeadline(t *testing.T) <-chan time.Time {
	d, ok := t.Deadline()
	if !ok {
		return nil
	}
	return time.After(time.Until(d) - 10*time.Second)
}

func (h *harness) waitFor(what string, cond func(*fakeserver.Server) bool) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-untilDeadline(h.t):
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := h.srv.WaitFor(ctx, cond); err != nil {
		h.t.Fatalf("waiting for %s: %v", what, err)
	}
}

type mapLookuper map[string]string

func (m mapLookuper) Lookup(k string) (string, bool) { v, ok := m[k]; return v, ok }

func scriptJob(name, script string) fakeserver.JobSpec {
	spec, _ := json.Marshal(map[string]any{"type": "script", "script": script})
	return fakeserver.JobSpec{TaskName: name, Steps: []fakeserver.StepSpec{{StepName: "s", ActionName: name, ActionSpec: spec}}}
}

func status(srv *fakeserver.Server, job string) string {
	st, _ := srv.Step(job, "s")
	return st.Status
}

func TestRunsStepsAndDrains(t *testing.T) {
	h := newHarness(t, nil)
	h.start()
	var jobs []string
	for i := range 5 {
		jobs = append(jobs, h.srv.AddJob(scriptJob(fmt.Sprintf("j%d", i), fmt.Sprintf("echo step %d; echo 'OUTPUT: {\"n\": %d}'", i, i))))
	}
	h.waitFor("all steps completed", func(s *fakeserver.Server) bool {
		for _, j := range jobs {
			if status(s, j) != "completed" {
				return false
			}
		}
		return true
	})
	for i, j := range jobs {
		st, _ := h.srv.Step(j, "s")
		if string(st.Output) != fmt.Sprintf(`{"n":%d}`, i) || st.Completes != 1 {
			t.Errorf("job %d: output %s, completes %d; want {\"n\":%d} once", i, st.Output, st.Completes, i)
		}
	}
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() after drain = %v, want nil", err)
	}
}

func TestConcurrencyLimitIsExact(t *testing.T) {
	h := newHarness(t, map[string]string{"max_concurrent": "3"})
	dir := t.TempDir()
	h.start()
	// Each step marks itself running, then waits for a release file.
	var jobs []string
	for i := range 8 {
		jobs = append(jobs, h.srv.AddJob(scriptJob(fmt.Sprintf("c%d", i),
			fmt.Sprintf("touch %s/run.%d; while [ ! -e %s/release ]; do sleep 0.02; done; rm %s/run.%d", dir, i, dir, dir, i))))
	}
	running := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "run.*"))
		return len(m)
	}
	h.waitFor("3 steps running", func(*fakeserver.Server) bool { return running() == 3 })
	// The limit is reached; it is never exceeded while the others wait.
	claimed := 0
	for _, j := range jobs {
		if status(h.srv, j) == "running" {
			claimed++
		}
	}
	if claimed != 3 {
		t.Errorf("steps claimed while 3 slots are busy = %d, want 3", claimed)
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.waitFor("all steps completed", func(s *fakeserver.Server) bool {
		for _, j := range jobs {
			if status(s, j) != "completed" {
				return false
			}
		}
		return true
	})
	// Over the whole run, as the server saw it: no more than 3 steps were
	// ever between their start and their completion at once.
	if most := maxOverlap(h.srv.Requests()); most != 3 {
		t.Errorf("at most %d steps ran at once, want exactly max_concurrent (3)", most)
	}
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// maxOverlap is the most steps that were started and not yet completed at
// the same time, from the server's request log (in arrival order).
func maxOverlap(reqs []fakeserver.Request) int {
	running, most := 0, 0
	for _, r := range reqs {
		switch {
		case r.Method != http.MethodPost || !strings.HasPrefix(r.Path, "/worker/jobs/"):
		case strings.HasSuffix(r.Path, "/start"):
			running++
			most = max(most, running)
		case strings.HasSuffix(r.Path, "/complete"):
			running--
		}
	}
	return most
}

func TestSecondSignalCancels(t *testing.T) {
	h := newHarness(t, map[string]string{"drain_timeout_secs": "600"})
	h.start()
	job := h.srv.AddJob(scriptJob("long", "echo started; sleep 300"))
	h.waitFor("step logged", func(s *fakeserver.Server) bool { return len(s.Logs(job)) > 0 })
	h.signal()
	// Draining: the step keeps running, and no new step is claimed.
	other := h.srv.AddJob(scriptJob("later", "true"))
	h.signals <- syscall.SIGTERM // second signal: cancel
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
	st, _ := h.srv.Step(job, "s")
	if st.Status != "failed" || !strings.Contains(st.Error, "Worker shutting down") {
		t.Errorf("cancelled step = %s %q, want failed with 'Worker shutting down'", st.Status, st.Error)
	}
	if s := status(h.srv, other); s != "ready" {
		t.Errorf("step queued during drain = %s, want ready (not claimed)", s)
	}
}

func TestOnSignalCancel(t *testing.T) {
	h := newHarness(t, map[string]string{"on_signal": "cancel"})
	h.start()
	job := h.srv.AddJob(scriptJob("long", "trap 'echo got TERM; exit 143' TERM; echo started; while :; do sleep 0.05; done"))
	h.waitFor("step logged", func(s *fakeserver.Server) bool { return len(s.Logs(job)) > 0 })
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
	st, _ := h.srv.Step(job, "s")
	if st.Status != "failed" || !strings.Contains(st.Error, "Worker shutting down") {
		t.Errorf("step = %s %q, want failed 'Worker shutting down'", st.Status, st.Error)
	}
	found := false
	for _, l := range h.srv.Logs(job) {
		found = found || l.Line == "got TERM"
	}
	if !found {
		t.Errorf("the step's TERM trap output was not delivered: %+v", h.srv.Logs(job))
	}
}

func TestChildKilledIsReported(t *testing.T) {
	h := newHarness(t, nil)
	h.start()
	dir := t.TempDir()
	job := h.srv.AddJob(scriptJob("victim", fmt.Sprintf("echo $PPID > %s/worker.pid; echo hello; sleep 300", dir)))
	h.waitFor("step logged", func(s *fakeserver.Server) bool { return len(s.Logs(job)) > 0 })
	data, err := os.ReadFile(filepath.Join(dir, "worker.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(data), &pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing the worker process %d: %v", pid, err)
	}
	h.waitFor("step failed", func(s *fakeserver.Server) bool { return status(s, job) == "failed" })
	st, _ := h.srv.Step(job, "s")
	if !strings.Contains(st.Error, "worker process for step s died: signal: killed") {
		t.Errorf("error = %q, want it to say the worker process died", st.Error)
	}
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

func TestReregistersWhenRowRemoved(t *testing.T) {
	h := newHarness(t, nil)
	id, _ := h.start()
	h.srv.DeleteWorker(id)
	job := h.srv.AddJob(scriptJob("after", "echo ok"))
	h.waitFor("step completed", func(s *fakeserver.Server) bool { return status(s, job) == "completed" })
	st, _ := h.srv.Step(job, "s")
	if st.WorkerID == id {
		t.Errorf("step ran under the removed worker id %s, want a new registration", id)
	}
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

func TestHealthEndpoints(t *testing.T) {
	h := newHarness(t, map[string]string{"heartbeat_interval_secs": "0.2"})
	_, addr := h.start()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	h.waitFor("two heartbeats", func(s *fakeserver.Server) bool { return countPath(s, "/worker/heartbeat") >= 2 })
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz after heartbeats = %d %q, want 200", code, body)
	}
	job := h.srv.AddJob(scriptJob("m", "echo metrics"))
	h.waitFor("step completed", func(s *fakeserver.Server) bool { return status(s, job) == "completed" })
	var body string
	h.waitFor("metrics count the step", func(*fakeserver.Server) bool {
		_, body = get("/metrics")
		return strings.Contains(body, `stroem_worker_steps_finished_total{result="succeeded"} 1`)
	})
	for _, want := range []string{"stroem_worker_claims_total", "stroem_worker_heartbeat_age_seconds", "stroem_worker_log_lines_shipped_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// A server that stops answering makes the worker unready after three
	// heartbeat intervals.
	h.srv.Down(true)
	code, body := eventually(t, 30*time.Second, func() (int, string, bool) {
		code, body := get("/readyz")
		return code, body, code == http.StatusServiceUnavailable
	})
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no answer from the server") {
		t.Errorf("/readyz with the server down = %d %q, want 503 saying the server does not answer", code, body)
	}
	h.srv.Down(false)
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// eventually polls cond (every 20 ms) until it holds or within passes; it
// returns cond's last values.
func eventually(t *testing.T, within time.Duration, cond func() (int, string, bool)) (int, string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body, ok := cond()
		if ok || time.Now().After(deadline) {
			return code, body
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countPath(s *fakeserver.Server, path string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Path == path && r.Status == http.StatusOK {
			n++
		}
	}
	return n
}

func TestIdleClaimsOncePerPollAndForksNothing(t *testing.T) {
	h := newHarness(t, map[string]string{"poll_interval_secs": "0.2"})
	h.start()
	// Watch a window of idle claims: at most one per poll interval.
	first := time.Now()
	h.waitFor("eight idle claims", func(s *fakeserver.Server) bool { return countClaims(s, first) >= 8 })
	elapsed := time.Since(first)
	n := countClaims(h.srv, first)
	if limit := int(elapsed/(200*time.Millisecond)) + 2; n > limit {
		t.Errorf("%d claims in %v idle, want at most %d (one per 200 ms poll)", n, elapsed, limit)
	}
	if kids := childrenOf(os.Getpid()); len(kids) != 0 {
		t.Errorf("idle supervisor has child processes %v, want none", kids)
	}
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// With poll_interval_max_secs, idle claims space out: each wait doubles
// from the poll interval up to the maximum. Timers never fire early, so
// every gap is at least its wait however busy the machine is.
func TestIdleBackOffSpacesClaims(t *testing.T) {
	h := newHarness(t, map[string]string{"poll_interval_secs": "0.05", "poll_interval_max_secs": "0.4"})
	h.start()
	h.waitFor("seven idle claims", func(s *fakeserver.Server) bool { return countClaims(s, time.Time{}) >= 7 })
	var at []time.Time
	for _, r := range h.srv.Requests() {
		if r.Path == "/worker/jobs/claim" {
			at = append(at, r.Time)
		}
	}
	want := 50 * time.Millisecond
	for i := 1; i < 7; i++ {
		if gap := at[i].Sub(at[i-1]); gap < want {
			t.Errorf("claim %d came %v after the one before, want at least %v (doubling from 50 ms up to 400 ms)", i+1, gap, want)
		}
		want = min(2*want, 400*time.Millisecond)
	}
	// And a step queued now is still run.
	job := h.srv.AddJob(scriptJob("after-idle", "true"))
	h.waitFor("the step after idling", func(s *fakeserver.Server) bool { return status(s, job) == "completed" })
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

func countClaims(s *fakeserver.Server, since time.Time) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Path == "/worker/jobs/claim" && !r.Time.Before(since) {
			n++
		}
	}
	return n
}

// childrenOf lists the live (non-zombie) children of pid from /proc.
func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[0] != "Z" && fields[1] == fmt.Sprint(pid) {
			out = append(out, p)
		}
	}
	return out
}

// TestSupervisorDeathDoesNotFailSteps runs `stroem-worker supervise` as a
// process, SIGKILLs it mid-step, and checks that the step's child still
// delivers the result, heartbeating for itself.
func TestSupervisorDeathDoesNotFailSteps(t *testing.T) {
	srv := fakeserver.New(fakeserver.Options{})
	srv.AddWorkspace(fakeserver.DefaultWorkspace, "", fakeserver.EmptyTarball())
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	dir := t.TempDir()
	cmd := exec.Command(binary, "supervise")
	cmd.Env = append(os.Environ(),
		"STROEM__SERVER_URL="+hs.URL, "STROEM__WORKER_TOKEN="+fakeserver.DefaultToken,
		"STROEM__WORKSPACE_DIR="+filepath.Join(dir, "ws"), "STROEM__POLL_INTERVAL_SECS=0.05",
		"STROEM__HEARTBEAT_INTERVAL_SECS=1")
	cmd.Dir = dir // no worker-config.yaml there: env configures it all
	// A file, not a pipe: the orphaned child keeps writing to it.
	logFile, err := os.Create(filepath.Join(dir, "supervisor.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	job := srv.AddJob(scriptJob("survivor", fmt.Sprintf("echo before; while [ ! -e %s/release ]; do sleep 0.02; done; echo after", dir)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.WaitFor(ctx, func(s *fakeserver.Server) bool { return len(s.Logs(job)) > 0 }); err != nil {
		t.Fatalf("waiting for the step to start: %v", err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The child notices its supervisor is gone and heartbeats itself.
	beats := func(s *fakeserver.Server) int {
		n := 0
		for _, r := range s.Requests() {
			if r.Path == "/worker/heartbeat" {
				n++
			}
		}
		return n
	}
	before := beats(srv)
	if err := srv.WaitFor(ctx, func(s *fakeserver.Server) bool { return beats(s) > before+1 }); err != nil {
		t.Fatalf("the orphaned child sent no heartbeats: %v", err)
	}
	// While a supervisor lives it keeps the step's handle; once it is gone
	// the child has put it in the spool, for a later deliverer.
	handles, _ := filepath.Glob(filepath.Join(dir, "ws", "spool", "*", "handle.json"))
	if len(handles) != 1 {
		t.Errorf("spools with a saved handle after the supervisor died: %v, want the running step's", handles)
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitFor(ctx, func(s *fakeserver.Server) bool { return status(s, job) == "completed" }); err != nil {
		st, _ := srv.Step(job, "s")
		t.Fatalf("step after supervisor death = %+v: %v", st, err)
	}
}

// TestUndeliveredResultIsRetried: the server is down when a step ends;
// its child gives up (delivery_timeout_secs 1) and leaves the spool; once
// the server is back, the supervisor delivers logs and result.
func TestUndeliveredResultIsRetried(t *testing.T) {
	h := newHarness(t, map[string]string{"delivery_timeout_secs": "1", "heartbeat_interval_secs": "1"})
	h.start()
	dir := t.TempDir()
	job := h.srv.AddJob(scriptJob("late", fmt.Sprintf("echo one; while [ ! -e %s/go ]; do sleep 0.02; done; echo two", dir)))
	h.waitFor("step logged", func(s *fakeserver.Server) bool { return len(s.Logs(job)) > 0 })
	h.srv.Down(true)
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The child gives up once its delivery time is over; wait for its spool
	// to be all that is left of it.
	spool := filepath.Join(h.cfg.WorkspaceDir, "spool")
	h.waitFor("the child to give up", func(*fakeserver.Server) bool { return len(childrenOf(os.Getpid())) == 0 })
	if entries, _ := os.ReadDir(spool); len(entries) == 0 {
		t.Fatal("no spool left behind by the child that could not deliver")
	}
	h.srv.Down(false)
	h.waitFor("step completed", func(s *fakeserver.Server) bool { return status(s, job) == "completed" })
	var lines []string
	for _, l := range h.srv.Logs(job) {
		lines = append(lines, l.Line)
	}
	if strings.Join(lines, ",") != "one,two" {
		t.Errorf("lines = %v, want one,two", lines)
	}
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// TestHeartbeatsOldIDWhileItsStepRuns: after registering again, the
// supervisor keeps heartbeating the id a running step was claimed with.
func TestHeartbeatsOldIDWhileItsStepRuns(t *testing.T) {
	h := newHarness(t, map[string]string{"heartbeat_interval_secs": "1"})
	oldID, _ := h.start()
	dir := t.TempDir()
	long := h.srv.AddJob(scriptJob("long", fmt.Sprintf("echo up; while [ ! -e %s/go ]; do sleep 0.02; done", dir)))
	h.waitFor("step running", func(s *fakeserver.Server) bool { return len(s.Logs(long)) > 0 })
	h.srv.DeleteWorker(oldID)
	next := h.srv.AddJob(scriptJob("next", "true"))
	h.waitFor("a new registration", func(s *fakeserver.Server) bool { return len(s.Workers()) >= 1 && status(s, next) == "completed" })
	after := len(h.srv.Requests())
	h.waitFor("two heartbeats for the old id", func(s *fakeserver.Server) bool {
		n := 0
		for _, r := range s.Requests()[after:] {
			if r.Path == "/worker/heartbeat" && strings.Contains(string(r.Body), oldID) {
				n++
			}
		}
		return n >= 2
	})
	os.WriteFile(filepath.Join(dir, "go"), nil, 0o600)
	h.waitFor("long step completed", func(s *fakeserver.Server) bool { return status(s, long) == "completed" })
	h.signal()
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v", err)
	}
}
