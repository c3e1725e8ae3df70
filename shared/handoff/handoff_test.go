package handoff_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/handoff"
)

// The test binary doubles as the child: with HANDOFF_TEST_CHILD set it
// receives a handoff on fds 3 and 4, starts a long sleep that outlives it
// (its pid goes out in the Spawned event), reports, and exits.
func TestMain(m *testing.M) {
	if os.Getenv("HANDOFF_TEST_CHILD") == "1" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

func child() int {
	h, ev, err := handoff.Receive()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	sleep := exec.Command("sleep", "3600")
	sleep.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleep.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	pid := strconv.Itoa(sleep.Process.Pid)
	if err := os.WriteFile(os.Getenv("HANDOFF_TEST_PIDFILE"), []byte(pid), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 5
	}
	ev.Emit(handoff.Event{Kind: handoff.Spawned, Handle: json.RawMessage(pid)})
	ev.Emit(handoff.Event{Kind: handoff.Delivered, Delivered: true, ExitCode: 7})
	ev.Emit(handoff.Event{Kind: handoff.Unanswered, WorkerID: h.WorkerID})
	ev.Emit(handoff.Event{Kind: handoff.Done, ExitCode: 7, Lines: int64(len(h.Step.StepName)), Bytes: int64(h.Config.MaxConcurrent)})
	return 0
}

// A real child gets the handoff and its events come back in order; the
// event stream ends when the child exits, although a process it started
// lives on (the pipes are close-on-exec in the child).
func TestParentAndChild(t *testing.T) {
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-5*time.Second))
		defer cancel()
	}
	p, err := handoff.NewParent()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	pidFile := filepath.Join(t.TempDir(), "sleep.pid")
	cmd.Env = append(os.Environ(), "HANDOFF_TEST_CHILD=1", "HANDOFF_TEST_PIDFILE="+pidFile)
	defer func() { // the sleep goes, whatever happened
		if data, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(string(data)); err == nil {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	}()
	cmd.Stderr = os.Stderr
	p.Attach(cmd)
	err = cmd.Start()
	p.Started()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(handoff.Handoff{Config: &config.Config{MaxConcurrent: 3}, Step: &api.Step{JobID: "j", StepName: "build"},
		WorkerID: "w-1", Attempt: "a1", SupervisorPID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	var got []handoff.Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Events(func(e handoff.Event) { got = append(got, e) })
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the event stream did not end when the child exited: a process it started holds the pipe")
	}
	if len(got) == 0 || got[0].Kind != handoff.Spawned {
		t.Fatalf("events = %+v, want Spawned first", got)
	}
	pid, err := strconv.Atoi(string(got[0].Handle))
	if err != nil {
		t.Fatalf("Spawned handle %q: %v", got[0].Handle, err)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatalf("the child's sleep %d is gone; the test needs it alive", pid)
	}
	want := []handoff.Event{
		{Kind: handoff.Delivered, Delivered: true, ExitCode: 7},
		{Kind: handoff.Unanswered, WorkerID: "w-1"},
		{Kind: handoff.Done, ExitCode: 7, Lines: 5, Bytes: 3},
	}
	if diff := cmp.Diff(want, got[1:]); diff != "" {
		t.Errorf("events after Spawned (-want +got):\n%s", diff)
	}
}

func TestReadRefusesIncompleteHandoffs(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not JSON", "garbage", "decoding handoff: invalid character"},
		{"empty", "", "decoding handoff: EOF"},
		{"no step", `{"config":{},"worker_id":"w"}`, "config, step and worker_id are required"},
		{"no job id", `{"config":{},"step":{"step_name":"s"},"worker_id":"w"}`, "config, step and worker_id are required"},
		{"no worker id", `{"config":{},"step":{"job_id":"j"}}`, "config, step and worker_id are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := handoff.Read(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Read(%q) = %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
	h, err := handoff.Read(strings.NewReader(`{"config":{"max_concurrent":2},"step":{"job_id":"j","step_name":"s"},"worker_id":"w","attempt":"a"}`))
	if err != nil || h.Step.JobID != "j" || h.WorkerID != "w" || h.Attempt != "a" || h.Config.MaxConcurrent != 2 {
		t.Errorf("Read(complete) = %+v, %v", h, err)
	}
}

// Scan skips what is not an event (a stray line from a library, a
// truncated write) and goes on.
func TestScanSkipsNonEvents(t *testing.T) {
	in := "hello\n{\"kind\":\"done\",\"exit_code\":1}\n{\"exit_code\":2}\n{\"kind\":\"deliv\n{\"kind\":\"delivered\",\"exit_code\":0,\"delivered\":true}\n"
	var got []handoff.Event
	handoff.Scan(strings.NewReader(in), func(e handoff.Event) { got = append(got, e) })
	want := []handoff.Event{{Kind: handoff.Done, ExitCode: 1}, {Kind: handoff.Delivered, Delivered: true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Scan (-want +got):\n%s", diff)
	}
}
