package oneshot_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
)

// dockerEnv is env with capability docker and a Docker runner on the
// test binary's engine, built from the config as the CLI builds it. At
// the end no container of its worker home may be left.
type dockerEnv struct {
	*env
	eng    *dockertest.Engine
	runner *docker.Runner
}

func newDockerEnv(t *testing.T, flags map[string]string) *dockerEnv {
	t.Helper()
	eng := dockertest.Shared(t)
	all := map[string]string{"capabilities": "script,docker", "runner_image": dockertest.ImageBusybox,
		"docker.host": eng.Host(), "docker.network": "none"}
	for k, v := range flags {
		all[k] = v
	}
	e := newEnv(t, all)
	c, err := docker.NewClient(docker.ResolveHost(e.cfg.DockerHost, os.Getenv), docker.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	home := "oneshot-" + runner.LabelValue(t.Name())
	r := &docker.Runner{Client: c, Log: slog.New(slog.NewTextHandler(testLog, nil)), RunnerImage: e.cfg.RunnerImage,
		PullPolicy: e.cfg.DockerPullPolicy, Network: e.cfg.DockerNetwork, Home: home, Getenv: func(string) string { return "" }}
	t.Cleanup(func() {
		defer c.Close()
		ids, err := eng.ContainerIDs(context.Background(), docker.LabelHome+"="+home)
		if err != nil || len(ids) > 0 {
			t.Errorf("containers left behind: %q, %v", ids, err)
		}
	})
	return &dockerEnv{env: e, eng: eng, runner: r}
}

func (d *dockerEnv) run(ctx context.Context, opts oneshot.Options) (oneshot.Outcome, error) {
	return oneshot.Run(ctx, d.cfg, opts, oneshot.Deps{
		Logger:  slog.New(slog.NewTextHandler(testLog, nil)),
		Environ: append(os.Environ(), "STROEM__WORKER_TOKEN="+fakeserver.DefaultToken),
		Runners: runner.Set{runner.Local: &local.Runner{}, runner.Docker: d.runner},
	})
}

// dockerJob queues one step "s": a script step on the Docker runner, or
// a docker action when image is set.
func (d *dockerEnv) dockerJob(spec map[string]any, image string, timeout int64) string {
	st := fakeserver.StepSpec{StepName: "s", TimeoutSecs: timeout}
	if image == "" {
		spec["type"] = "script"
		st.Runner = "docker"
	} else {
		spec["type"] = "docker"
		st.ActionImage = image
	}
	st.ActionSpec, _ = json.Marshal(spec)
	return d.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{st}})
}

// TestDockerSteps: an inline script, a workspace source and a `type:
// docker` action, end to end through claim, run, logs and completion.
func TestDockerSteps(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, nil)
	d.srv.AddWorkspace(fakeserver.DefaultWorkspace, "", tarGz(t, map[string]string{
		"bin/hello.sh": "#!/bin/sh\necho \"hello $1 from $PWD\"\n",
	}))
	script, _ := json.Marshal(map[string]any{"type": "script", "script": `printf 'a\nOUTPUT: {"n":1}\n\nb\n'; echo err >&2`})
	source, _ := json.Marshal(map[string]any{"type": "script", "source": "bin/hello.sh", "args": []string{"world"}})
	action, _ := json.Marshal(map[string]any{"type": "docker", "cmd": `echo "docker $STROEM_STEP_NAME"; echo 'OUTPUT: {"from":"docker"}'`})
	job := d.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{
		{StepName: "script", Runner: "docker", ActionSpec: script},
		{StepName: "source", Runner: "docker", ActionSpec: source},
		{StepName: "action", ActionType: "docker", ActionImage: dockertest.ImageBusybox, ActionSpec: action},
	}})
	for range 3 {
		if out, err := d.run(ctxT(t), oneshot.Options{}); err != nil || !out.Succeeded() {
			t.Fatalf("Run() = %+v, %v", out, err)
		}
	}
	// The order across the two streams is the engine's to keep (it does
	// not); within each it is the step's.
	logs := map[string][]string{}
	for _, l := range d.srv.Logs(job) {
		logs[l.Step+" "+l.Stream] = append(logs[l.Step+" "+l.Stream], l.Line)
	}
	want := map[string][]string{
		"script stdout": {"a", `OUTPUT: {"n":1}`, "", "b"},
		"script stderr": {"err"},
		"source stdout": {"hello world from /workspace"},
		"action stdout": {"docker action", `OUTPUT: {"from":"docker"}`},
	}
	if diff := cmp.Diff(want, logs); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
	for step, output := range map[string]string{"script": `{"n":1}`, "action": `{"from":"docker"}`} {
		st, _ := d.srv.Step(job, step)
		if st.Status != "completed" || string(st.Output) != output {
			t.Errorf("step %s = %s, output %s; want completed, %s", step, st.Status, st.Output, output)
		}
	}
}

// TestDockerFailures: the container's own exit code and stderr in the
// error (the reference worker reports -1 for every non-zero exit).
func TestDockerFailures(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, nil)
	job := d.dockerJob(map[string]any{"script": "echo boom >&2; exit 7"}, "", 0)
	out, err := d.run(ctxT(t), oneshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := d.step(job)
	if st.Status != "failed" || *st.ExitCode != 7 || st.Error != "Exit code: 7\nStderr: boom" || out.ExitCode != 7 {
		t.Errorf("step = %s, exit %v, %q; want failed, 7, 'Exit code: 7\\nStderr: boom'", st.Status, st.ExitCode, st.Error)
	}
}

// TestDockerOfficialImageShape: runner_image with an ENTRYPOINT like the
// official one still runs the script (contract §5.1 #1).
func TestDockerOfficialImageShape(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, map[string]string{"runner_image": dockertest.ImageEntrypoint})
	job := d.dockerJob(map[string]any{"script": "echo SCRIPT-RAN; exit 3"}, "", 0)
	if _, err := d.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	if st := d.step(job); *st.ExitCode != 3 || strings.Join(d.lines(job), ",") != "SCRIPT-RAN" {
		t.Errorf("step = exit %v, lines %q; want 3 and the script's line", st.ExitCode, d.lines(job))
	}
}

// TestDockerStateAndArtifacts: the state snapshot is at $STATE_DIR in the
// container, files in $STATE_OUT_DIR and STATE: lines go up, and so do
// the files in $ARTIFACTS_DIR, with an image that runs as uid 1000.
func TestDockerStateAndArtifacts(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, map[string]string{"runner_image": dockertest.ImageUser})
	d.srv.PutState(fakeserver.DefaultWorkspace, "t", fakeserver.Snapshot{HasJSON: true,
		Tarball: tarGz(t, map[string]string{"state.json": `{"count":1}`, "seen.txt": "a\n"})})
	script := `echo "dirs $STATE_DIR $STATE_OUT_DIR $ARTIFACTS_DIR"
cat "$STATE_DIR/seen.txt"
cp "$STATE_DIR/seen.txt" "$STATE_OUT_DIR/seen.txt" && echo b >> "$STATE_OUT_DIR/seen.txt"
printf 'x\nSTATE: {"count": 2}\nGLOBAL_STATE: {"runs": 7}\n'
mkdir -p "$ARTIFACTS_DIR/r" && echo '{"ok":true}' > "$ARTIFACTS_DIR/r/result.json"`
	job := d.dockerJob(map[string]any{"script": script}, "", 0)
	if _, err := d.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	if st := d.step(job); st.Status != "completed" {
		t.Fatalf("step = %s %q (lines %q)", st.Status, st.Error, d.lines(job))
	}
	if got := strings.Join(d.lines(job)[:2], "|"); got != "dirs /state /state-out /artifacts|a" {
		t.Errorf("the step saw %q, want the in-container paths and the snapshot", got)
	}
	snap, ok := d.srv.State(fakeserver.DefaultWorkspace, "t")
	if !ok {
		t.Fatal("no task state uploaded")
	}
	files := untar(t, snap.Tarball)
	if files["seen.txt"] != "a\nb\n" || !strings.Contains(files["state.json"], `"count":2`) {
		t.Errorf("uploaded task state = %q", files)
	}
	if global, ok := d.srv.State(fakeserver.DefaultWorkspace, ""); !ok || !strings.Contains(untar(t, global.Tarball)["state.json"], `"runs":7`) {
		t.Errorf("global state = %+v, %v; want runs 7", global, ok)
	}
	arts := d.srv.Artifacts(job, "s")
	if len(arts) != 1 || arts[0].Name != "r/result.json" || strings.TrimSpace(string(arts[0].Data)) != `{"ok":true}` {
		t.Errorf("artifacts = %+v, want r/result.json", arts)
	}
}

// TestDockerCancelStubborn: a cancelled job's container, whose PID 1
// ignores SIGTERM, is killed after cancel_grace_secs and reported.
func TestDockerCancelStubborn(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, nil)
	job := d.dockerJob(map[string]any{"script": "trap '' TERM; echo ready; while :; do sleep 0.1; done"}, "", 0)
	ctx := ctxT(t)
	done := make(chan oneshot.Outcome, 1)
	go func() { out, _ := d.run(ctx, oneshot.Options{}); done <- out }()
	d.waitLogged(ctx, job, "ready")
	d.srv.CancelJob(job)
	out := <-done
	st := d.step(job)
	if st.Status != "failed" || *st.ExitCode != -1 || !strings.HasSuffix(st.Error, "Job cancelled") || !out.Delivered {
		t.Errorf("cancelled step = %s exit %v %q (delivered %v), want failed, -1, 'Job cancelled'", st.Status, st.ExitCode, st.Error, out.Delivered)
	}
}

func TestDockerTimeout(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, nil)
	job := d.dockerJob(map[string]any{"script": "echo started; sleep 1000"}, "", 1)
	out, err := d.run(ctxT(t), oneshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st := d.step(job); st.Error != "Step timed out after 1s" || out.ExitCode != -1 {
		t.Errorf("step = %q, exit %d; want 'Step timed out after 1s', -1", st.Error, out.ExitCode)
	}
}

// TestDockerServerOutage: the server goes away while the container runs;
// its logs and result wait in the spool and the next run delivers them.
func TestDockerServerOutage(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, map[string]string{"delivery_timeout_secs": "1"})
	job := d.dockerJob(map[string]any{"script": "echo one; while [ ! -e /state/go ]; do sleep 0.02; done; echo two; echo 'OUTPUT: {\"late\":true}'"}, "", 0)
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() { _, err := d.run(ctx, oneshot.Options{}); done <- err }()
	d.waitLogged(ctx, job, "one")
	d.srv.Down(true)
	// The step's state directory is mounted in the container: a file
	// there lets it go on.
	states, _ := filepath.Glob(filepath.Join(d.cfg.WorkspaceDir, "steps", "*", "state"))
	if len(states) != 1 {
		t.Fatalf("step state directories = %q, want one", states)
	}
	if err := os.WriteFile(filepath.Join(states[0], "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, oneshot.ErrNotDelivered) {
		t.Fatalf("Run() with the server down = %v, want ErrNotDelivered", err)
	}
	d.srv.Down(false)
	// The next run gets the product's delivery window: how long delivery
	// takes on a busy machine is not the test's to guess.
	d.cfg.DeliveryTimeoutSecs = 600
	if out, err := d.run(ctx, oneshot.Options{}); err != nil || out.Claimed {
		t.Fatalf("second Run() = %+v, %v; want delivery and no new claim", out, err)
	}
	st := d.step(job)
	if st.Status != "completed" || st.Completes != 1 || string(st.Output) != `{"late":true}` {
		t.Errorf("step after the outage = %s, %d completes, output %s", st.Status, st.Completes, st.Output)
	}
	if got := strings.Join(d.lines(job), ","); got != `one,two,OUTPUT: {"late":true}` {
		t.Errorf("lines = %s", got)
	}
}

// TestDockerMissingImageAndBadHost: a pull that fails for a missing image
// fails the step with the engine's message; an engine that does not
// answer fails it with where the worker looked.
func TestDockerMissingImageAndBadHost(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, nil)
	job := d.dockerJob(map[string]any{"cmd": "true"}, "localhost:1/nope", 0)
	if _, err := d.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	st := d.step(job)
	if st.Status != "failed" || *st.ExitCode != -1 || !strings.HasPrefix(st.Error, "Failed to execute step: Failed to pull image localhost:1/nope:latest: ") {
		t.Errorf("missing image: step = %s exit %v %q", st.Status, st.ExitCode, st.Error)
	}

	bad, err := docker.NewClient(docker.Host{Addr: "unix://" + filepath.Join(t.TempDir(), "docker.sock"), From: "docker.host"}, docker.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	good := d.runner.Client
	d.runner.Client = bad
	defer func() { d.runner.Client = good }()
	job = d.dockerJob(map[string]any{"script": "true"}, "", 0)
	if _, err := d.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	st = d.step(job)
	if st.Status != "failed" || !strings.HasPrefix(st.Error, "Failed to execute step: ") || !strings.Contains(st.Error, "cannot reach the Docker engine at unix://") {
		t.Errorf("bad host: step = %s %q", st.Status, st.Error)
	}
}

// TestDockerSweepAtStart: a container of this worker home whose step no
// live process owns (a worker died before it could record the container)
// is removed when a claim-and-run starts; one whose spool is locked by a
// live process is not.
func TestDockerSweepAtStart(t *testing.T) {
	t.Parallel()
	d := newDockerEnv(t, nil)
	ctx := ctxT(t)
	create := func(key string) string {
		body := map[string]any{"Image": dockertest.ImageBusybox, "Cmd": []string{"sleep", "1000"},
			"Labels":     map[string]string{docker.LabelHome: d.runner.Home, docker.LabelSpool: key},
			"HostConfig": map[string]any{"NetworkMode": "none"}}
		id, err := d.runner.Client.CreateContainer(ctx, "", body)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.runner.Client.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	orphan := create("dead-step")
	live := create("live-step")
	deliverer := &delivery.Deliverer{Root: delivery.Root(d.cfg.WorkspaceDir)}
	// A live owner: it holds its step's spool lock, as runStep does.
	lock, err := deliverer.Lock("live-step")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if out, err := d.run(ctx, oneshot.Options{}); err != nil || out.Claimed {
		t.Fatalf("Run() = %+v, %v; want no work", out, err)
	}
	if ids, _ := d.eng.ContainerIDs(ctx, docker.LabelSpool+"=dead-step"); len(ids) != 0 {
		t.Errorf("the dead step's container %.12s is still there", orphan)
	}
	if ids, _ := d.eng.ContainerIDs(ctx, docker.LabelSpool+"=live-step"); len(ids) != 1 {
		t.Errorf("the live step's container %.12s was removed", live)
	}
	if err := d.runner.Client.Remove(ctx, live); err != nil {
		t.Fatal(err)
	}
}
