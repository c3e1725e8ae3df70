package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
)

func TestMain(m *testing.M) {
	// dockertest.M stops the engine the Docker scripts started, if any.
	testscript.Main(dockertest.M(m), map[string]func(){
		"stroem-worker": func() { os.Exit(process()) },
	})
}

type serverKey struct{}

// TestScripts runs the CLI end to end (testdata/script/*.txtar) against a
// fake Strøm server on loopback, started fresh for each script.
func TestScripts(t *testing.T) {
	t.Parallel()
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			srv := fakeserver.New(fakeserver.Options{})
			srv.AddWorkspace(fakeserver.DefaultWorkspace, "", fakeserver.EmptyTarball())
			hs := httptest.NewServer(srv)
			env.Defer(hs.Close)
			env.Values[serverKey{}] = srv
			if d, ok := t.Deadline(); ok {
				env.Values[deadlineKey{}] = d.Add(-10 * time.Second)
			}
			env.Setenv("SERVER_URL", hs.URL)
			env.Setenv("TOKEN", fakeserver.DefaultToken)
			env.Setenv("STROEM__SERVER_URL", hs.URL)
			env.Setenv("STROEM__WORKER_TOKEN", fakeserver.DefaultToken)
			env.Setenv("STROEM__WORKSPACE_DIR", env.WorkDir+"/ws")
			env.Setenv("STROEM__POLL_INTERVAL_SECS", "0.05")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"queue":       cmdQueue,
			"serverstate": cmdServerState,
			"exitcode":    cmdExitCode,
			"waitstep":    cmdWaitStep,
			"waitlog":     cmdWaitLog,
			"alive":       cmdAlive,
			"holdport":    cmdHoldPort,
		},
	})
}

func server(ts *testscript.TestScript) *fakeserver.Server {
	return ts.Value(serverKey{}).(*fakeserver.Server)
}

// queue FILE VAR: enqueue the job in FILE (fakeserver.JobSpec JSON) and
// store its id in $VAR.
func cmdQueue(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: queue FILE VAR")
	}
	var spec fakeserver.JobSpec
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &spec); err != nil {
		ts.Fatalf("decoding %s: %v", args[0], err)
	}
	ts.Setenv(args[1], server(ts).AddJob(spec))
}

// serverstate JOB STEP FILE: write what the server holds for the step
// (state as JSON, then its log lines as "stream: line") to FILE.
func cmdServerState(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: serverstate JOB STEP FILE")
	}
	srv := server(ts)
	st, ok := srv.Step(args[0], args[1])
	if !ok {
		ts.Fatalf("no step %s/%s", args[0], args[1])
	}
	var b strings.Builder
	state, _ := json.Marshal(st)
	b.Write(state)
	b.WriteString("\n")
	for _, l := range srv.Logs(args[0]) {
		if l.Step == args[1] {
			fmt.Fprintf(&b, "%s: %s\n", l.Stream, l.Line)
		}
	}
	if err := os.WriteFile(ts.MkAbs(args[2]), []byte(b.String()), 0o600); err != nil {
		ts.Fatalf("writing %s: %v", args[2], err)
	}
}

// waitstep JOB STEP: wait until the step is completed or failed (as long
// as the test may run).
func cmdWaitStep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitstep JOB STEP")
	}
	ctx := context.Background()
	if d, ok := ts.Value(deadlineKey{}).(time.Time); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	err := server(ts).WaitFor(ctx, func(s *fakeserver.Server) bool {
		st, _ := s.Step(args[0], args[1])
		return st.Status == "completed" || st.Status == "failed"
	})
	if err != nil {
		ts.Fatalf("waiting for step %s/%s: %v", args[0], args[1], err)
	}
}

type deadlineKey struct{}

// holdport VAR: listen on a free loopback port until the script ends, and
// store its address in $VAR.
func cmdHoldPort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: holdport VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ts.Fatalf("holdport: %v", err)
	}
	ts.Defer(func() { ln.Close() })
	ts.Setenv(args[0], ln.Addr().String())
}

// waitlog JOB LINE: wait until the job's log holds LINE.
func cmdWaitLog(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitlog JOB LINE")
	}
	ctx := context.Background()
	if d, ok := ts.Value(deadlineKey{}).(time.Time); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	err := server(ts).WaitFor(ctx, func(s *fakeserver.Server) bool {
		for _, l := range s.Logs(args[0]) {
			if l.Line == args[1] {
				return true
			}
		}
		return false
	})
	if err != nil {
		ts.Fatalf("waiting for %q in the log of %s: %v", args[1], args[0], err)
	}
}

// alive FILE: the process whose pid FILE holds is alive (not a zombie).
// "! alive FILE" waits, as long as the test may run, for it to be gone.
func cmdAlive(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: alive FILE")
	}
	pid := strings.TrimSpace(ts.ReadFile(args[0]))
	isAlive := func() bool {
		data, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return false
		}
		s := string(data)
		return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+2:], "Z")
	}
	if !neg {
		if !isAlive() {
			ts.Fatalf("process %s is not alive", pid)
		}
		return
	}
	deadline, ok := ts.Value(deadlineKey{}).(time.Time)
	for isAlive() {
		if ok && time.Now().After(deadline) {
			ts.Fatalf("process %s is still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exitcode N PROG ARGS...: run PROG and require exit code N (stdout and
// stderr are then checked with the usual stdout/stderr commands).
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exitcode: running %s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}
