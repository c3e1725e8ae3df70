package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

// runtimeAPI is a fake AWS Lambda Runtime API on loopback: it hands out
// the invocations queued in next (deadline in ms from now) and collects
// the responses.
type runtimeAPI struct {
	next      chan int64
	responses chan string
}

func (a *runtimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/2018-06-01/runtime/invocation/next":
		var ms int64
		select {
		case ms = <-a.next:
		case <-r.Context().Done():
			return
		}
		id := fmt.Sprintf("req-%d", time.Now().UnixNano())
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", id)
		w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(time.Duration(ms)*time.Millisecond).UnixMilli(), 10))
		w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-north-1:000000000000:function:stroem")
		io.WriteString(w, `{}`)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/response"):
		b, _ := io.ReadAll(r.Body)
		a.responses <- string(b)
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/error"):
		b, _ := io.ReadAll(r.Body)
		a.responses <- "error: " + string(b)
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

// TestLambdaRuntime runs the binary as a Lambda custom runtime (no
// arguments, AWS_LAMBDA_RUNTIME_API set): one invocation runs a step to
// completion; the next is cut by the invocation deadline, and the step is
// reported failed before the response goes back.
func TestLambdaRuntime(t *testing.T) {
	t.Parallel()
	srv := fakeserver.New(fakeserver.Options{})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	api := &runtimeAPI{next: make(chan int64, 2), responses: make(chan string, 2)}
	rs := httptest.NewServer(api)
	t.Cleanup(rs.Close)

	cmd := exec.Command(os.Args[0])
	cmd.Args = []string{"stroem-worker"} // testscript dispatches on argv[0]
	cmd.Env = append(os.Environ(),
		"AWS_LAMBDA_RUNTIME_API="+strings.TrimPrefix(rs.URL, "http://"),
		"STROEM__SERVER_URL="+hs.URL, "STROEM__WORKER_TOKEN="+fakeserver.DefaultToken,
		"STROEM__WORKSPACE_DIR="+t.TempDir(), "STROEM__CANCEL_GRACE_SECS=1")
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	wait := func() map[string]any {
		t.Helper()
		select {
		case r := <-api.responses:
			var out map[string]any
			if err := json.Unmarshal([]byte(r), &out); err != nil {
				t.Fatalf("invocation response %q: %v", r, err)
			}
			return out
		case <-time.After(60 * time.Second):
			t.Fatal("no invocation response within 60 s")
			return nil
		}
	}
	spec := func(script string) json.RawMessage {
		b, _ := json.Marshal(map[string]string{"type": "script", "script": script})
		return b
	}

	ok := srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: spec("echo from lambda")}}})
	api.next <- 60_000
	if out := wait(); out["claimed"] != true || out["exit_code"] != float64(0) || out["delivered"] != true {
		t.Errorf("first invocation = %v, want a claimed, delivered step with exit 0", out)
	}
	if st, _ := srv.Step(ok, "s"); st.Status != "completed" {
		t.Errorf("step = %+v, want completed", st)
	}

	long := srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: spec("echo started; sleep 300")}}})
	// 16 s of invocation, less the 15 s default reserve: the step gets 1 s.
	api.next <- 16_000
	out := wait()
	st, _ := srv.Step(long, "s")
	if st.Status != "failed" || !strings.HasSuffix(st.Error, "Lambda deadline reached") {
		t.Errorf("step cut by the deadline = %s %q, want failed with 'Lambda deadline reached'", st.Status, st.Error)
	}
	if out["delivered"] != true || out["exit_code"] != float64(-1) {
		t.Errorf("second invocation = %v, want the failure delivered before the response", out)
	}
	if logs := srv.Logs(long); len(logs) == 0 || logs[0].Line != "started" {
		t.Errorf("logs of the cut step = %+v, want them delivered", logs)
	}
}
