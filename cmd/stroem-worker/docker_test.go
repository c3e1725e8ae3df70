package main

import (
	"context"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
)

type engineKey struct{}

// TestDockerScripts runs the CLI with capability docker end to end
// (testdata/docker/*.txtar) on the test binary's private engine and a
// fake Strøm server started fresh for each script.
func TestDockerScripts(t *testing.T) {
	t.Parallel()
	eng := dockertest.Shared(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/docker",
		Setup: func(env *testscript.Env) error {
			srv := fakeserver.New(fakeserver.Options{})
			hs := httptest.NewServer(srv)
			env.Defer(hs.Close)
			env.Values[serverKey{}] = srv
			env.Values[engineKey{}] = eng
			if d, ok := t.Deadline(); ok {
				env.Values[deadlineKey{}] = d.Add(-10 * time.Second)
			}
			env.Setenv("STROEM__SERVER_URL", hs.URL)
			env.Setenv("STROEM__WORKER_TOKEN", fakeserver.DefaultToken)
			env.Setenv("STROEM__WORKSPACE_DIR", env.WorkDir+"/ws")
			env.Setenv("STROEM__POLL_INTERVAL_SECS", "0.05")
			env.Setenv("STROEM__CAPABILITIES", "script,docker")
			env.Setenv("STROEM__DOCKER__HOST", eng.Host())
			env.Setenv("STROEM__DOCKER__NETWORK", "none")
			env.Setenv("STROEM__RUNNER_IMAGE", dockertest.ImageBusybox)
			env.Setenv("STROEM__CANCEL_GRACE_SECS", "1")
			env.Setenv("IMAGE_BUSYBOX", dockertest.ImageBusybox)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"queue":       cmdQueue,
			"serverstate": cmdServerState,
			"exitcode":    cmdExitCode,
			"waitlog":     cmdWaitLog,
			"waitstep":    cmdWaitStep,
			"containers":  cmdContainers,
		},
	})
}

// containers JOB N: the engine has N containers of job JOB, running or
// not.
func cmdContainers(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: containers JOB N")
	}
	want, err := strconv.Atoi(args[1])
	if err != nil {
		ts.Fatalf("containers: %v", err)
	}
	eng := ts.Value(engineKey{}).(*dockertest.Engine)
	ids, err := eng.ContainerIDs(context.Background(), docker.LabelJob+"="+args[0])
	if err != nil {
		ts.Fatalf("listing containers: %v", err)
	}
	if len(ids) != want {
		ts.Fatalf("job %s has %d containers (%q), want %d", args[0], len(ids), ids, want)
	}
}
