package docker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(dockertest.M(m)) }

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

// recorder is a runner.Output that keeps everything and lets a test wait
// for a line.
type recorder struct {
	mu      sync.Mutex
	lines   []string // "stream: line"
	handle  json.RawMessage
	exited  bool
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) Line(stream string, line []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, stream+": "+string(line))
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) Started(h json.RawMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handle = append(json.RawMessage(nil), h...)
}

func (r *recorder) Exited() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exited = true
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func (r *recorder) stream(s string) []string {
	var out []string
	for _, l := range r.all() {
		if v, ok := strings.CutPrefix(l, s+": "); ok {
			out = append(out, v)
		}
	}
	return out
}

// await waits until line ("stream: text") has been seen.
func (r *recorder) await(ctx context.Context, t *testing.T, line string) {
	t.Helper()
	for {
		r.mu.Lock()
		ch := r.changed
		for _, l := range r.lines {
			if l == line {
				r.mu.Unlock()
				return
			}
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("waiting for %q: %v; lines so far: %q", line, ctx.Err(), r.all())
		}
	}
}

type fixture struct {
	t   *testing.T
	eng *dockertest.Engine
	r   *docker.Runner
}

// newFixture is a runner on the shared engine, with a worker home of its
// own: at the end, no container of that home may be left.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	eng := dockertest.Shared(t)
	c, err := docker.NewClient(docker.Host{Addr: eng.Host(), From: "test"}, docker.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	home := "test-" + runner.LabelValue(t.Name())
	r := &docker.Runner{Client: c, RunnerImage: dockertest.ImageBusybox, Home: home, Network: "none",
		Getenv: func(string) string { return "" }}
	t.Cleanup(func() {
		defer c.Close()
		ids, err := eng.ContainerIDs(context.Background(), docker.LabelHome+"="+home)
		if err != nil {
			t.Errorf("listing containers: %v", err)
		}
		if len(ids) > 0 {
			t.Errorf("containers left behind: %q", ids)
		}
	})
	return &fixture{t: t, eng: eng, r: r}
}

// job is a step of type typ with spec, its directories and a workspace
// holding files (name -> content; names ending in .sh are executable).
func (f *fixture) job(typ, image, spec string, files map[string]string) *runner.Job {
	t := f.t
	t.Helper()
	parsed, err := api.ParseActionSpec(json.RawMessage(spec))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	d := runner.Dirs{
		Artifacts: filepath.Join(root, "artifacts"),
		State:     filepath.Join(root, "state"), StateOut: filepath.Join(root, "state-out"),
		GlobalState: filepath.Join(root, "global-state"), GlobalStateOut: filepath.Join(root, "global-state-out"),
	}
	for _, p := range []string{d.Artifacts, d.State, d.StateOut, d.GlobalState, d.GlobalStateOut} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ws := filepath.Join(root, "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		p := filepath.Join(ws, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	step := &api.Step{JobID: "0123456789abcdef", TaskName: "t", StepName: "s[0]", ActionName: "a",
		ActionType: typ, ActionImage: image, Workspace: "default"}
	if typ == "script" {
		step.Runner = "docker"
	}
	base, vars := f.r.Environment(step, append(os.Environ(), "STROEM_TEST_WORKER_ONLY=leak"), d)
	env := append(base, "STROEM_JOB_ID="+step.JobID, "STROEM_STEP_NAME="+step.StepName)
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	for _, k := range parsed.EnvKeys {
		env = append(env, k+"="+parsed.Env[k])
	}
	return &runner.Job{Step: step, Spec: parsed, Workspace: ws, Env: env, Dirs: d,
		WorkerID: "w-1", Attempt: delivery.NewAttempt(), Key: "key-" + runner.LabelValue(t.Name()),
		Signal: syscall.SIGTERM, Grace: time.Second}
}

func (f *fixture) run(ctx context.Context, job *runner.Job) (runner.Exit, *recorder, error) {
	rec := newRecorder()
	exit, err := f.r.Run(ctx, job, rec)
	return exit, rec, err
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	for _, code := range []int{0, 1, 7, 137} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			// 137: a child killed by SIGKILL, as the shell reports it.
			script := fmt.Sprintf(`echo out; echo err >&2; [ %d = 137 ] && { sh -c 'kill -9 $$'; exit $?; }; exit %d`, code, code)
			exit, rec, err := f.run(ctxT(t), f.job("script", "", fmt.Sprintf(`{"script":%q}`, script), nil))
			if err != nil {
				t.Fatalf("Run() = %v", err)
			}
			if exit.Code != code || exit.Signal != 0 {
				t.Errorf("Run() = %+v, want code %d", exit, code)
			}
			if diff := cmp.Diff([]string{"out"}, rec.stream("stdout")); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			// The shell adds "Killed" for its SIGKILLed child.
			if stderr := rec.stream("stderr"); len(stderr) == 0 || stderr[0] != "err" {
				t.Errorf("stderr = %q, want err first", stderr)
			}
			if !rec.exited || len(rec.handle) == 0 {
				t.Errorf("exited %v, handle %s: want both", rec.exited, rec.handle)
			}
		})
	}
}

// TestEntrypointImageRunsScript is the regression test for contract
// §5.1 #1: with the official runner image's ENTRYPOINT the reference
// worker's script never runs and the step passes.
func TestEntrypointImageRunsScript(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.r.RunnerImage = dockertest.ImageEntrypoint
	exit, rec, err := f.run(ctxT(t), f.job("script", "", `{"script":"echo SCRIPT-RAN; pwd; exit 3"}`, nil))
	if err != nil || exit.Code != 3 {
		t.Fatalf("Run() = %+v, %v; want exit 3", exit, err)
	}
	if diff := cmp.Diff([]string{"SCRIPT-RAN", "/workspace"}, rec.stream("stdout")); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
}

// TestStartupSnippets: the snippets the official image's entrypoint
// would source still run before the script, whose argv replaced it.
func TestStartupSnippets(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10-env.sh"), []byte("export FROM_STARTUP=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.r.StartupDir = dir
	f.r.RunnerImage = dockertest.ImageEntrypoint
	_, rec, err := f.run(ctxT(t), f.job("script", "", `{"script":"echo startup=$FROM_STARTUP"}`, nil))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"startup=yes"}, rec.stream("stdout")); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
}

// TestLinesPerStream is the regression test for contract §5.1 #3: one
// write holding many lines, an OUTPUT: line that is not the first, empty
// lines, \r\n, a line written in pieces, and the two streams apart.
func TestLinesPerStream(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	script := `printf 'first\nOUTPUT: {"a":1}\n\nwin\r\nno newline'; printf 'e1\ne2\n' >&2; printf ' end\n'; printf 'par'; printf 'tial\n'`
	_, rec, err := f.run(ctxT(t), f.job("script", "", fmt.Sprintf(`{"script":%q}`, script), nil))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"first", `OUTPUT: {"a":1}`, "", "win", "no newline end", "partial"}, rec.stream("stdout")); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"e1", "e2"}, rec.stream("stderr")); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

func TestLongLineCut(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	n := runner.MaxLineBytes + 10
	_, rec, err := f.run(ctxT(t), f.job("script", "", fmt.Sprintf(`{"script":"head -c %d /dev/zero | tr '\\\\0' x; echo; echo after"}`, n), nil))
	if err != nil {
		t.Fatal(err)
	}
	out := rec.stream("stdout")
	if len(out) != 3 || len(out[0]) != runner.MaxLineBytes || len(out[1]) != 10 || out[2] != "after" {
		lens := []int{}
		for _, l := range out {
			lens = append(lens, len(l))
		}
		t.Errorf("line lengths = %v, want [%d 10 5]", lens, runner.MaxLineBytes)
	}
}

// TestEnvironment: nothing of the worker's environment, the action's
// variables, the in-container state paths (contract §5.1 #8), the image's
// ENV, and the working directory.
func TestEnvironment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	job := f.job("script", "", `{"script":"env | sort; pwd","env":{"MY_VAR":"v=1"}}`, nil)
	_, rec, err := f.run(ctxT(t), job)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range rec.stream("stdout") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	want := map[string]string{"MY_VAR": "v=1", "STATE_DIR": "/state", "STATE_OUT_DIR": "/state-out",
		"GLOBAL_STATE_DIR": "/global-state", "GLOBAL_STATE_OUT_DIR": "/global-state-out", "ARTIFACTS_DIR": "/artifacts"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["STROEM_TEST_WORKER_ONLY"]; ok {
		t.Errorf("the worker's environment reached the container")
	}
	if !strings.Contains(got["PATH"], "/bin") {
		t.Errorf("PATH = %q, want the image's", got["PATH"])
	}
	if out := rec.stream("stdout"); out[len(out)-1] != "/workspace" {
		t.Errorf("working directory = %q, want /workspace", out[len(out)-1])
	}
}

// TestContainerActions: `type: docker` runs the action's image with its
// cmd, entrypoint and command, or the image's own.
func TestContainerActions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, image, spec string
		wantCode          int
		wantOut           []string
	}{
		{"cmd", dockertest.ImageBusybox, `{"cmd":"echo from-cmd; echo $ARTIFACTS_DIR; exit 4"}`, 4, []string{"from-cmd", "/artifacts"}},
		{"entrypoint and command", dockertest.ImageBusybox, `{"entrypoint":["echo"],"command":["a","b c"]}`, 0, []string{"a b c"}},
		// The reference worker's Docker behaviour, kept for container
		// actions: cmd goes after the image's ENTRYPOINT as `sh -c <cmd>`;
		// this image's `entrypoint.sh sh -c` takes "sh" as its script,
		// which reads nothing from /dev/null. Set entrypoint or command.
		{"image entrypoint swallows cmd", dockertest.ImageEntrypoint, `{"cmd":"echo via-entrypoint"}`, 0, nil},
		{"image defaults", dockertest.ImageEntrypoint, `{}`, 0, []string{"Strøm runner ready"}},
		{"no state for container actions", dockertest.ImageBusybox, `{"cmd":"echo state=${STATE_DIR:-none}; ls /state >/dev/null 2>&1 || echo no-mount"}`, 0, []string{"state=none", "no-mount"}},
		{"workdir", dockertest.ImageBusybox, `{"cmd":"pwd","workdir":"/tmp"}`, 0, []string{"/tmp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			exit, rec, err := f.run(ctxT(t), f.job("docker", tt.image, tt.spec, nil))
			if err != nil || exit.Code != tt.wantCode {
				t.Fatalf("Run() = %+v, %v; want exit %d (lines %q)", exit, err, tt.wantCode, rec.all())
			}
			if diff := cmp.Diff(tt.wantOut, rec.stream("stdout")); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWorkspaceSource: a workspace file run by path, with args, in the
// read-only workspace.
func TestWorkspaceSource(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	files := map[string]string{"bin/hello.sh": "#!/bin/sh\necho hello \"$@\" from $(pwd)\n", "_libraries/lib/x.sh": "#!/bin/sh\necho lib\n"}
	exit, rec, err := f.run(ctxT(t), f.job("script", "", `{"source":"bin/hello.sh","args":["a b"]}`, files))
	if err != nil || exit.Code != 0 {
		t.Fatalf("Run() = %+v, %v (lines %q)", exit, err, rec.all())
	}
	if diff := cmp.Diff([]string{"hello a b from /workspace"}, rec.stream("stdout")); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	// The workspace is read-only.
	exit, rec, err = f.run(ctxT(t), f.job("script", "", `{"script":"touch /workspace/x"}`, files))
	if err != nil || exit.Code == 0 {
		t.Errorf("writing the workspace = %+v, %v (lines %q), want a failure", exit, err, rec.all())
	}
}

// TestMountsForAnotherUser: an image running as uid 1000 reads the state
// snapshot and writes the out directories and /artifacts (contract §2.5).
func TestMountsForAnotherUser(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.r.RunnerImage = dockertest.ImageUser
	job := f.job("script", "", `{"script":"id -u; cat /state/in.txt; echo out > $STATE_OUT_DIR/o.txt; echo g > $GLOBAL_STATE_OUT_DIR/g.txt; mkdir $ARTIFACTS_DIR/sub && echo art > $ARTIFACTS_DIR/sub/a.txt"}`, nil)
	if err := os.WriteFile(filepath.Join(job.Dirs.State, "in.txt"), []byte("state-in\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	exit, rec, err := f.run(ctxT(t), job)
	if err != nil || exit.Code != 0 {
		t.Fatalf("Run() = %+v, %v (lines %q)", exit, err, rec.all())
	}
	if diff := cmp.Diff([]string{"1000", "state-in"}, rec.stream("stdout")); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	for _, p := range []string{filepath.Join(job.Dirs.StateOut, "o.txt"), filepath.Join(job.Dirs.GlobalStateOut, "g.txt"), filepath.Join(job.Dirs.Artifacts, "sub", "a.txt")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the step's file: %v", err)
		}
	}
}

// TestOwnershipHandedBack: what a root container wrote belongs to the
// worker's user afterwards (here a pretend uid 1000 worker).
func TestOwnershipHandedBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.r.Owner = &docker.Owner{UID: 1000, GID: 1000}
	job := f.job("script", "", `{"script":"mkdir -p $ARTIFACTS_DIR/d && echo x > $ARTIFACTS_DIR/d/f && chmod 600 $ARTIFACTS_DIR/d/f && chmod 700 $ARTIFACTS_DIR/d && echo s > $STATE_OUT_DIR/s"}`, nil)
	exit, rec, err := f.run(ctxT(t), job)
	if err != nil || exit.Code != 0 {
		t.Fatalf("Run() = %+v, %v (lines %q)", exit, err, rec.all())
	}
	for _, p := range []string{filepath.Join(job.Dirs.Artifacts, "d"), filepath.Join(job.Dirs.Artifacts, "d", "f"), filepath.Join(job.Dirs.StateOut, "s")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1000 {
			t.Errorf("%s is owned by %d:%d, want 1000:1000", p, st.Uid, st.Gid)
		}
	}
}

func TestResources(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// cgroup v1 and v2 both: the memory limit and the CPU quota.
	script := `cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/memory.max
q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null) && p=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us) || { read q p < /sys/fs/cgroup/cpu.max; }
echo $((q * 1000 / p))`
	exit, rec, err := f.run(ctxT(t), f.job("script", "", fmt.Sprintf(`{"script":%q,"resources":{"cpu":"500m","memory":"64Mi"}}`, script), nil))
	if err != nil || exit.Code != 0 {
		t.Fatalf("Run() = %+v, %v (lines %q)", exit, err, rec.all())
	}
	if diff := cmp.Diff([]string{fmt.Sprint(64 << 20), "500"}, rec.stream("stdout")); diff != "" {
		t.Errorf("memory limit, milli-CPUs (-want +got):\n%s", diff)
	}
	_, _, err = f.run(ctxT(t), f.job("script", "", `{"script":"true","resources":{"memory":"lots"}}`, nil))
	if err == nil || !strings.Contains(err.Error(), `Failed to build run config: resources.memory: "lots" is not a memory amount`) {
		t.Errorf("bad memory = %v, want a run config error", err)
	}
}

// TestStopStubbornContainer: cancel_signal reaches PID 1, which ignores
// it; after cancel_grace_secs the container is killed, and Run returns
// once it is gone.
func TestStopStubbornContainer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	job := f.job("script", "", `{"script":"trap '' TERM; echo ready; while :; do sleep 0.1; done"}`, nil)
	rec := newRecorder()
	type result struct {
		exit runner.Exit
		err  error
	}
	done := make(chan result, 1)
	go func() { e, err := f.r.Run(ctx, job, rec); done <- result{e, err} }()
	rec.await(ctxT(t), t, "stdout: ready")
	cancel()
	if res := <-done; res.err != nil || res.exit.Code != 137 {
		t.Errorf("Run() = %+v, %v; want exit 137 (killed after the grace period)", res.exit, res.err)
	}
}

func TestStopGracefulContainer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	job := f.job("script", "", `{"script":"trap 'echo bye; exit 143' TERM; echo ready; while :; do sleep 0.05; done"}`, nil)
	job.Grace = time.Hour // only the container's own exit can end this test
	rec := newRecorder()
	done := make(chan runner.Exit, 1)
	go func() { e, _ := f.r.Run(ctx, job, rec); done <- e }()
	rec.await(ctxT(t), t, "stdout: ready")
	cancel()
	if exit := <-done; exit.Code != 143 {
		t.Errorf("Run() = %+v, want 143 from the trap", exit)
	}
	if out := rec.stream("stdout"); out[len(out)-1] != "bye" {
		t.Errorf("stdout = %q, want the trap's last words kept", out)
	}
}

// TestMissingImage: the step fails with the engine's (registry's)
// message; with pull_policy never, without asking a registry.
func TestMissingImage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// A registry that refuses connections: the pull fails at once.
	job := f.job("docker", "localhost:1/nope", `{"cmd":"true"}`, nil)
	_, _, err := f.run(ctxT(t), job)
	if err == nil || !strings.HasPrefix(err.Error(), "Failed to pull image localhost:1/nope:latest: ") {
		t.Errorf("Run(missing image) = %v, want the pull failure", err)
	}
	var re *runner.Error
	if errors.As(err, &re) {
		t.Errorf("a pull failure is an execution failure (reported after 'Failed to execute step: '), got *runner.Error")
	}
	f.r.PullPolicy = docker.PullNever
	_, _, err = f.run(ctxT(t), job)
	if err == nil || !strings.Contains(err.Error(), "not on the engine and docker.pull_policy is never") {
		t.Errorf("Run(missing image, never) = %v, want the policy named", err)
	}
}

// TestBadHost: an engine that does not answer fails the step with where
// the worker looked.
func TestBadHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, err := docker.NewClient(docker.Host{Addr: "unix://" + filepath.Join(t.TempDir(), "none.sock"), From: "docker.host"}, docker.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f.r.Client = c
	_, _, err = f.run(ctxT(t), f.job("script", "", `{"script":"true"}`, nil))
	if err == nil || !strings.Contains(err.Error(), "cannot reach the Docker engine at unix://") || !strings.Contains(err.Error(), "(docker.host)") {
		t.Errorf("Run() with no engine = %v, want the address and its origin", err)
	}
}

// TestKillAndSweep: Kill removes the container a handle names; Sweep
// removes the home's containers whose spool is not locked, and keeps the
// others.
func TestKillAndSweep(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := ctxT(t)
	start := func(key string) (*recorder, chan struct{}, context.CancelFunc) {
		job := f.job("script", "", `{"script":"echo ready; sleep 1000"}`, nil)
		job.Key = key
		rctx, cancel := context.WithCancel(ctx)
		rec := newRecorder()
		done := make(chan struct{})
		go func() { defer close(done); f.r.Run(rctx, job, rec) }()
		rec.await(ctx, t, "stdout: ready")
		return rec, done, cancel
	}
	// Three running steps; their runs are "dead workers" as far as the
	// containers are concerned: a second runner (another process) acts.
	rec1, done1, cancel1 := start("spool-a")
	_, done2, cancel2 := start("spool-b")
	_, done3, cancel3 := start("spool-c")
	defer func() {
		for _, c := range []context.CancelFunc{cancel1, cancel2, cancel3} {
			c()
		}
		<-done1
		<-done2
		<-done3
	}()
	other := &docker.Runner{Client: f.r.Client, Home: f.r.Home}
	if err := other.Kill(ctx, rec1.handle); err != nil {
		t.Fatalf("Kill() = %v", err)
	}
	<-done1 // its Run sees the container gone
	locked := map[string]bool{"spool-c": true}
	var tried []string
	n, err := other.Sweep(ctx, func(key string) (func(), error) {
		tried = append(tried, key)
		if locked[key] {
			return nil, errors.New("busy")
		}
		return func() {}, nil
	})
	if err != nil || n != 1 {
		t.Errorf("Sweep() = %d, %v; want 1 removed (tried %q)", n, err, tried)
	}
	<-done2
	ids, err := f.eng.ContainerIDs(ctx, docker.LabelSpool+"=spool-c")
	if err != nil || len(ids) != 1 {
		t.Errorf("containers of the locked spool = %q, %v; want it kept", ids, err)
	}
	if err := other.Kill(ctx, rec1.handle); err != nil {
		t.Errorf("Kill() of a removed container = %v, want nil", err)
	}
}
