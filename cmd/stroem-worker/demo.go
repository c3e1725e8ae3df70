package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

// DemoCmd is `stroem-worker demo`.
type DemoCmd struct {
	Keep bool `help:"Keep the demo's temporary directory (config, worker id, spool) for a look afterwards."`

	// worker is the binary run as claim-and-run (tests); empty means this
	// executable.
	worker string
}

// demoJobs are the sample steps: a greeting with structured output, a
// failing step, a noisy one, one with arguments, and a bad spec.
var demoJobs = []fakeserver.JobSpec{
	{TaskName: "hello", Steps: []fakeserver.StepSpec{{StepName: "greet", ActionName: "say-hello",
		ActionSpec: json.RawMessage(`{"type":"script","script":"echo \"Hello $WHO!\"\necho 'OUTPUT: {\"greeting\": \"Hello '\"$WHO\"'!\"}'","env":{"WHO":"Bob"}}`)}}},
	{TaskName: "broken", Steps: []fakeserver.StepSpec{{StepName: "fail", ActionName: "fail",
		ActionSpec: json.RawMessage(`{"type":"script","script":"echo about to fail\necho 'something went wrong' >&2\nexit 3"}`)}}},
	{TaskName: "noisy", Steps: []fakeserver.StepSpec{{StepName: "count", ActionName: "count",
		ActionSpec: json.RawMessage(`{"type":"script","script":"i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done; echo done >&2"}`)}}},
	{TaskName: "args", Steps: []fakeserver.StepSpec{{StepName: "process[0]", ActionName: "echo-args",
		ActionSpec: json.RawMessage(`{"type":"script","script":"echo \"first=$1 second=$2\"","args":["a b","c"]}`)}}},
	{TaskName: "from-workspace", Steps: []fakeserver.StepSpec{{StepName: "report", ActionName: "report",
		ActionSpec: json.RawMessage(`{"type":"script","source":"bin/report.sh","args":["weekly"],"env":{"API_TOKEN":"demo-secret-value"}}`)}}},
	{TaskName: "legacy", Steps: []fakeserver.StepSpec{{StepName: "old", ActionName: "old-cmd",
		ActionSpec: json.RawMessage(`{"type":"script","cmd":"echo hi"}`)}}},
}

// demoWorkspace is the sample workspace tarball: one executable script,
// run by the "from-workspace" job as a `source:` action.
func demoWorkspace() ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	script := "#!/bin/sh\necho \"building the $1 report in $(basename \"$PWD\")\"\necho \"the API token is $API_TOKEN (masked in logs)\"\necho 'OUTPUT: {\"report\": \"'\"$1\"'\"}'\n"
	if err := tw.WriteHeader(&tar.Header{Name: "./bin/report.sh", Mode: 0o755, Size: int64(len(script)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write([]byte(script)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Run starts the dev server in-process and runs claim-and-run children.
func (d *DemoCmd) Run(ctx context.Context, g *Globals) error {
	dir, err := os.MkdirTemp("", "stroem-demo-")
	if err != nil {
		return fmt.Errorf("creating demo directory: %w", err)
	}
	if d.Keep {
		fmt.Fprintln(g.stdout, "demo directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	srv := fakeserver.New(fakeserver.Options{})
	tarball, err := demoWorkspace()
	if err != nil {
		return fmt.Errorf("building the demo workspace: %w", err)
	}
	srv.AddWorkspace(fakeserver.DefaultWorkspace, "", tarball)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening on loopback: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	url := "http://" + ln.Addr().String()

	cfgPath := filepath.Join(dir, "worker-config.yaml")
	cfgText := fmt.Sprintf("server_url: %q\nworker_token: %q\nworker_name: demo-worker\nworkspace_dir: %q\npoll_interval_secs: 0.2\n",
		url, fakeserver.DefaultToken, filepath.Join(dir, "work"))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return fmt.Errorf("writing demo config: %w", err)
	}
	self := d.worker
	if self == "" {
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("finding own executable: %w", err)
		}
	}
	fmt.Fprintf(g.stdout, "Dev server on %s with %d queued jobs. Running one `stroem-worker claim-and-run` process per step.\n\n", url, len(demoJobs))
	ids := make([]string, len(demoJobs))
	for i, j := range demoJobs {
		ids[i] = srv.AddJob(j)
	}
	// One run per job, and one more to show a run that finds no work.
	for range len(demoJobs) + 1 {
		claims := demoClaims(srv, ids)
		start := time.Now()
		cmd := exec.CommandContext(ctx, self, "--config", cfgPath, "--log-level", "warn", "claim-and-run")
		cmd.Stdout, cmd.Stderr = g.stdout, g.stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			return fmt.Errorf("running claim-and-run: %w", err)
		}
		took := time.Since(start).Round(time.Millisecond)
		// Name what the run did, so the extra run's exit 0 reads as what
		// it is rather than a seventh job.
		what := "(no work left)"
		for i, n := range demoClaims(srv, ids) {
			if n > claims[i] {
				what = demoJobs[i].TaskName + " / " + demoJobs[i].Steps[0].StepName
			}
		}
		fmt.Fprintf(g.stdout, "$ stroem-worker claim-and-run   -> exit %d in %-7s  %s\n", code, took, what)
	}
	fmt.Fprintln(g.stdout, "\nWhat the server received:")
	for i, j := range demoJobs {
		st, _ := srv.Step(ids[i], j.Steps[0].StepName)
		logs := srv.Logs(ids[i])
		fmt.Fprintf(g.stdout, "\n● %s / %s: %s", j.TaskName, j.Steps[0].StepName, st.Status)
		if st.ExitCode != nil {
			fmt.Fprintf(g.stdout, " (exit_code %d)", *st.ExitCode)
		}
		fmt.Fprintf(g.stdout, ", %d log lines\n", len(logs))
		if len(st.Output) > 0 {
			fmt.Fprintf(g.stdout, "  output: %s\n", st.Output)
		}
		if st.Error != "" {
			fmt.Fprintf(g.stdout, "  error:  %s\n", strings.ReplaceAll(st.Error, "\n", "\n          "))
		}
		show := logs
		if len(show) > 3 {
			show = append(show[:2:2], show[len(show)-1])
		}
		for k, l := range show {
			if k == 2 && len(logs) > 3 {
				fmt.Fprintf(g.stdout, "  ... %d more lines ...\n", len(logs)-3)
			}
			fmt.Fprintf(g.stdout, "  [%s] %s\n", l.Stream, l.Line)
		}
	}
	fmt.Fprintf(g.stdout, "\nRequests the server saw: %d. Try `stroem-worker dev-server` to queue your own actions.\n", len(srv.Requests()))
	return nil
}

// demoClaims is how often each demo job's step has been claimed.
func demoClaims(srv *fakeserver.Server, ids []string) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		st, _ := srv.Step(id, demoJobs[i].Steps[0].StepName)
		out[i] = st.Claims
	}
	return out
}
