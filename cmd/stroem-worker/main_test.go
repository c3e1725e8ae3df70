package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"stroem-worker": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
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
