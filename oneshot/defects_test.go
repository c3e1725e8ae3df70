package oneshot_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

// TestStopGivesChildrenTheirGrace: the step's leader dies at once on the
// cancel signal, while a child traps it and needs 3 s to clean up. The
// child must get its grace (10 s here), whether its output still goes to
// the step's pipes or elsewhere. Not parallel: the child is reparented to
// this test process, and another test's step ending here would sweep it
// (in a worker, each step has a process of its own).
func TestStopGivesChildrenTheirGrace(t *testing.T) {
	for name, redirect := range map[string]string{"output to the step": "", "output elsewhere": ">/dev/null 2>&1"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, map[string]string{"cancel_grace_secs": "10"})
			dir := t.TempDir()
			script := fmt.Sprintf(`sh -c 'trap "sleep 3; echo cleaned > %[1]s/done; exit 0" TERM; touch %[1]s/trapped; while :; do sleep 0.05; done' %[2]s &
while [ ! -e %[1]s/trapped ]; do sleep 0.01; done
echo ready
wait`, dir, redirect)
			job := e.job(map[string]any{"script": script}, 0)
			ctx := ctxT(t)
			done := make(chan oneshot.Outcome, 1)
			go func() { out, _ := e.run(ctx, oneshot.Options{}); done <- out }()
			e.waitLogged(ctx, job, "ready")
			e.srv.CancelJob(job)
			out := <-done
			if !strings.HasSuffix(out.Error, "Job cancelled") {
				t.Errorf("outcome error = %q, want it to end 'Job cancelled'", out.Error)
			}
			if data, err := os.ReadFile(filepath.Join(dir, "done")); err != nil || string(data) != "cleaned\n" {
				t.Errorf("the child's TERM handler did not finish within the grace period: %v", err)
			}
		})
	}
}

// TestLargeOutputLine: an OUTPUT: line far over the 64 KiB transport cut
// is parsed whole; one over what a completion can carry fails the step
// with a clear error instead of a smaller earlier output winning.
func TestLargeOutputLine(t *testing.T) {
	t.Parallel()
	big := `echo 'OUTPUT: {"small":1}'; printf 'OUTPUT: {"big":"'; head -c %d /dev/zero | tr '\0' a; printf '"}\n'`
	t.Run("200 KB", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		job := e.job(map[string]any{"script": fmt.Sprintf(big, 200_000)}, 0)
		if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
			t.Fatal(err)
		}
		st := e.step(job)
		var out struct{ Big string }
		if err := json.Unmarshal(st.Output, &out); err != nil || len(out.Big) != 200_000 {
			t.Errorf("output = %.80s... (%d bytes), %v; want the 200 KB value", st.Output, len(st.Output), err)
		}
	})
	t.Run("3 MB", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		job := e.job(map[string]any{"script": fmt.Sprintf(big, 3_000_000)}, 0)
		if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
			t.Fatal(err)
		}
		if st := e.step(job); st.Status != "failed" || !strings.Contains(st.Error, "output too large") {
			t.Errorf("step = %s %q, want failed with 'output too large'", st.Status, st.Error)
		}
	})
}

// TestAnyStepNameRuns: long and odd step names make safe spool names.
func TestAnyStepNameRuns(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		strings.Repeat("ø", 150),
		strings.Repeat("very-long-step-name-", 30),
		"a/../../b[0] with spaces",
	} {
		e := newEnv(t, nil)
		raw, _ := json.Marshal(map[string]any{"type": "script", "script": "echo hi"})
		job := e.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: name, ActionSpec: raw}}})
		if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
			t.Fatalf("step %.20q...: %v", name, err)
		}
		if st, _ := e.srv.Step(job, name); st.Status != "completed" {
			t.Errorf("step %.20q... = %s %q, want completed", name, st.Status, st.Error)
		}
	}
}

// TestSecretAcrossTransportCut: a secret that straddles the 64 KiB point
// where a long line is cut for transport is still masked.
func TestSecretAcrossTransportCut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	script := `printf '%s' "$(head -c 65530 /dev/zero | tr '\0' x)"; echo "$API_TOKEN tail"`
	job := e.job(map[string]any{"script": script, "env": map[string]string{"API_TOKEN": "s3cr3t-value-123"}}, 0)
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(e.lines(job), "")
	if strings.Contains(all, "s3cr3t") || strings.Contains(all, "value-123") || !strings.HasSuffix(all, "*** tail") {
		t.Errorf("lines end %q, want the secret masked whole", all[max(0, len(all)-40):])
	}
}

// TestNewAttemptSupersedesEarlierOne: attempt 1 of a step still holds its
// spool (its process lives) when this host claims attempt 2. Attempt 2
// runs and says an earlier result was discarded; attempt 1's result is
// never sent afterwards, while its logs are.
func TestNewAttemptSupersedesEarlierOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	job := e.job(map[string]any{"script": "echo attempt two"}, 0)
	d := &delivery.Deliverer{Root: delivery.Root(e.cfg.WorkspaceDir)}
	old := delivery.Key(job, "s", "attempt1")
	lock, err := d.Lock(old)
	if err != nil {
		t.Fatal(err)
	}
	writeSpool(t, d.Root, old, job, "s", "attempt one", `{"exit_code":0,"output":{"from":"attempt one"},"error":null}`)
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(e.lines(job), "\n"), "earlier attempt of this step on this host had not reported its result") {
		t.Errorf("attempt 2's log = %q, want the note about the discarded result", e.lines(job))
	}
	lock.Unlock()
	// The next run delivers what attempt 1 left: logs, but no result.
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	st := e.step(job)
	if st.Completes != 1 || st.Status != "completed" || strings.Contains(string(st.Output), "attempt one") {
		t.Errorf("step = %s, %d completes, output %s; want attempt 2's single completion", st.Status, st.Completes, st.Output)
	}
	if !strings.Contains(strings.Join(e.lines(job), "\n"), "attempt one") {
		t.Errorf("attempt 1's log lines were not delivered: %q", e.lines(job))
	}
}

// writeSpool leaves a spool as a process that ran a step and could not
// deliver it would: one log line and a saved completion.
func writeSpool(t *testing.T, root, key, job, step, line, completion string) {
	t.Helper()
	dir := filepath.Join(root, key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	meta := fmt.Sprintf(`{"job_id":%q,"step_name":%q,"worker_id":"w","created":%q}`, job, step, time.Now().UTC().Format(time.RFC3339Nano))
	rec := fmt.Sprintf(`{"ts":"2026-01-01T00:00:00.000000000Z","stream":"stdout","line":%q}`+"\n", line)
	for name, data := range map[string]string{"meta.json": meta, "logs.jsonl": rec, "complete.json": completion} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFullDiskLosesNothingSilently: workspace_dir is a small filesystem
// that the step's log overflows. Lines go on to the server from memory;
// what memory cannot hold (the server is down meanwhile) is counted, the
// log says so, and the step is reported failed with the count.
func TestFullDiskLosesNothingSilently(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	for _, tt := range []struct {
		name  string
		lines int
		down  bool
	}{
		{"fits in memory", 20000, false},
		{"memory runs out", 400000, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ws := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			e := newEnv(t, map[string]string{"workspace_dir": ws})
			fifo := filepath.Join(t.TempDir(), "ended")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			job := e.job(map[string]any{"script": fmt.Sprintf("echo started; seq 1 %d; echo > %s", tt.lines, fifo)}, 0)
			ctx := ctxT(t)
			done := make(chan error, 1)
			go func() { _, err := e.run(ctx, oneshot.Options{}); done <- err }()
			if tt.down {
				e.waitLogged(ctx, job, "started")
				e.srv.Down(true)
			}
			if _, err := os.ReadFile(fifo); err != nil { // the step's output is all written
				t.Fatal(err)
			}
			e.srv.Down(false)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			st := e.step(job)
			lines := e.lines(job)
			notice := lines[len(lines)-1]
			if !strings.Contains(notice, "could not be written to the worker's disk") {
				t.Errorf("last line = %q, want the notice about the disk", notice)
			}
			if !tt.down {
				if st.Status != "completed" || len(lines) != tt.lines+2 {
					t.Errorf("step = %s %q with %d lines, want completed with all %d", st.Status, st.Error, len(lines), tt.lines+2)
				}
				return
			}
			if st.Status != "failed" || !strings.Contains(st.Error, "log lines were lost") {
				t.Errorf("step = %s %q, want failed saying log lines were lost", st.Status, st.Error)
			}
			// Every line is delivered or counted: no silent gap.
			var lost int
			fmt.Sscanf(st.Error[strings.Index(st.Error, "\n")+1:], "%d log lines were lost", &lost)
			if lost == 0 || len(lines)-2+lost != tt.lines {
				t.Errorf("%d lines delivered and %d counted lost, want %d in all (error %q)", len(lines)-2, lost, tt.lines, st.Error)
			}
		})
	}
}

// TestLostClaimAnswerAbandonsWorkerID: the server commits a claim but its
// answer is lost. The worker id it went out with gets no further claim
// and no heartbeat; claim-and-run forgets the persisted id (or, while it
// may go on waiting, registers a fresh one), so the server's heartbeat
// timeout fails the step instead of leaving it running for ever.
func TestLostClaimAnswerAbandonsWorkerID(t *testing.T) {
	t.Parallel()
	for _, wait := range []time.Duration{0, 30 * time.Second} {
		t.Run(fmt.Sprintf("wait=%s", wait), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			lost := e.job(map[string]any{"script": "echo never seen"}, 0)
			var dropped atomic.Bool
			e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
				if e.srv.Endpoint(r) == "POST /worker/jobs/claim" && dropped.CompareAndSwap(false, true) {
					return fakeserver.Fault{DropAnswer: true}
				}
				return fakeserver.Fault{}
			})
			var next string
			if wait > 0 {
				next = e.job(map[string]any{"script": "echo next"}, 0)
			}
			out, err := e.run(ctxT(t), oneshot.Options{Wait: wait})
			st := e.step(lost)
			if st.Status != "running" || st.WorkerID == "" {
				t.Fatalf("step whose claim answer was lost = %s by %q, want running (committed)", st.Status, st.WorkerID)
			}
			abandoned := st.WorkerID
			claims, beats := 0, 0
			for _, r := range e.srv.Requests() {
				if !strings.Contains(string(r.Body), abandoned) {
					continue
				}
				switch r.Path {
				case "/worker/jobs/claim":
					claims++
				case "/worker/heartbeat":
					if r.Time.After(st.StartedAt) {
						beats++
					}
				}
			}
			if claims != 1 || beats != 0 {
				t.Errorf("after the lost answer, id %s got %d claims and %d heartbeats; want the one claim and no heartbeat", abandoned, claims, beats)
			}
			persisted, _ := os.ReadFile(filepath.Join(e.cfg.WorkspaceDir, "worker-id"))
			if strings.Contains(string(persisted), abandoned) {
				t.Errorf("the abandoned id is still persisted for the next run")
			}
			if wait == 0 {
				if err == nil || out.Claimed {
					t.Errorf("Run() = %+v, %v; want an error (no answer) and no step", out, err)
				}
				return
			}
			if err != nil || !out.Claimed || out.WorkerID == abandoned {
				t.Fatalf("Run() with time to wait = %+v, %v; want the next step claimed under a fresh id", out, err)
			}
			if got := e.step(next); got.Status != "completed" || got.WorkerID != out.WorkerID {
				t.Errorf("next step = %s by %s, want completed by %s", got.Status, got.WorkerID, out.WorkerID)
			}
		})
	}
}
