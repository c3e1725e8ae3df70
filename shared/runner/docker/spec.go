package docker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/stroem-worker/stroem-worker/shared/runner"
)

// containerSpec is the body of POST /containers/create, plus what the
// runner keeps for itself.
type containerSpec struct {
	Image string
	// Entrypoint and Cmd: null keeps the image's (an explicit entrypoint
	// drops the image's Cmd, on both engines).
	Entrypoint   []string
	Cmd          []string
	Env          []string
	WorkingDir   string `json:",omitempty"`
	Labels       map[string]string
	AttachStdin  bool
	AttachStdout bool
	AttachStderr bool
	Tty          bool
	OpenStdin    bool
	HostConfig   hostConfig

	name string
	// writable are the host directories mounted read-write.
	writable []string
}

type hostConfig struct {
	Binds []string `json:",omitempty"`
	// LogConfig "none": the runner's attach is the only reader. With the
	// default json-file driver the engine paces output at the logger's
	// speed and drops what is queued 2 s after the exit.
	LogConfig   logConfig
	NetworkMode string `json:",omitempty"`
	NanoCpus    int64  `json:",omitempty"`
	Memory      int64  `json:",omitempty"`
}

type logConfig struct {
	Type   string
	Config map[string]string
}

// containerSpec builds the container for a step (contract §2.2, with
// the entrypoint set for workspace scripts, labels, and the action's
// workdir and resources applied).
func (r *Runner) containerSpec(job *runner.Job) (*containerSpec, error) {
	step := job.Step
	entry, cmd, err := runner.ContainerCommand(step, job.Spec)
	if err != nil {
		return nil, err
	}
	if runner.WithWorkspace(step) {
		entry = runner.StartupPreamble(entry, runner.StartupDir)
	}
	s := &containerSpec{
		Image:        r.imageFor(step),
		Entrypoint:   entry,
		Cmd:          cmd,
		Env:          job.Env,
		WorkingDir:   runner.ContainerWorkdir(step, job.Spec),
		Labels:       r.labels(job),
		AttachStdout: true,
		AttachStderr: true,
		HostConfig:   hostConfig{LogConfig: logConfig{Type: "none", Config: map[string]string{}}, NetworkMode: r.Network},
		name:         containerName(job),
	}
	if s.Env == nil {
		s.Env = []string{}
	}
	if s.HostConfig.NanoCpus, err = parseCPU(job.Spec.Resources.CPU); err != nil {
		return nil, runner.Errorf("Failed to build run config: resources.cpu: %v", err)
	}
	if s.HostConfig.Memory, err = parseMemory(job.Spec.Resources.Memory); err != nil {
		return nil, runner.Errorf("Failed to build run config: resources.memory: %v", err)
	}
	if err := r.mounts(job, s); err != nil {
		return nil, runner.Errorf("Failed to build run config: %v", err)
	}
	return s, nil
}

func (r *Runner) labels(job *runner.Job) map[string]string {
	l := map[string]string{
		LabelApp:      AppValue,
		LabelJob:      job.Step.JobID,
		LabelStep:     runner.LabelValue(job.Step.StepName),
		LabelAttempt:  job.Attempt,
		LabelWorkerID: job.WorkerID,
	}
	if r.Home != "" {
		l[LabelHome] = r.Home
	}
	if job.Key != "" {
		l[LabelSpool] = job.Key
	}
	return l
}

// containerName is stroem-<job8>-<step>-<attempt>: readable in `docker
// ps`, and unique per attempt, so a create whose answer was lost can be
// undone by name.
func containerName(job *runner.Job) string {
	jobID := runner.LabelValue(job.Step.JobID)
	if len(jobID) > 8 {
		jobID = jobID[:8]
	}
	step := runner.LabelValue(job.Step.StepName)
	if len(step) > 40 {
		step = strings.TrimRight(step[:40], "-")
	}
	parts := []string{"stroem"}
	for _, p := range []string{jobID, step, runner.LabelValue(job.Attempt)} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "-")
}

// mounts binds the step's directories (contract §2.2): the workspace
// read-only, the startup snippets read-only when the host has them, the
// state snapshots read-only and the out directories read-write for a
// script step, and /artifacts read-write for every step. Writable
// directories are opened to every uid (a USER in the image is not the
// worker's); workspace_dir is 0700, so that opens them to containers
// only.
func (r *Runner) mounts(job *runner.Job, s *containerSpec) error {
	bind := func(src, dst, mode string) error {
		if src == "" {
			return nil
		}
		if strings.ContainsAny(src, ":,") {
			return fmt.Errorf("cannot mount %s into the container: the Docker runner needs host paths without ':' or ','", src)
		}
		s.HostConfig.Binds = append(s.HostConfig.Binds, src+":"+dst+":"+mode)
		return nil
	}
	d := job.Dirs
	if runner.WithWorkspace(job.Step) {
		if job.Step.Workspace != "" {
			if err := bind(job.Workspace, runner.ContainerWorkspace, "ro"); err != nil {
				return err
			}
		}
		startup := r.StartupDir
		if startup == "" {
			startup = runner.StartupDir
		}
		if fi, err := os.Stat(startup); err == nil && fi.IsDir() {
			if err := bind(startup, runner.StartupDir, "ro"); err != nil {
				return err
			}
		}
		for _, m := range []struct{ src, dst string }{{d.State, runner.ContainerState}, {d.GlobalState, runner.ContainerGlobalState}} {
			if m.src == "" {
				continue
			}
			if err := readableByAll(m.src); err != nil {
				return err
			}
			if err := bind(m.src, m.dst, "ro"); err != nil {
				return err
			}
		}
		for _, m := range []struct{ src, dst string }{{d.StateOut, runner.ContainerStateOut}, {d.GlobalStateOut, runner.ContainerGlobalStateOut}} {
			if err := r.writable(s, m.src, m.dst, bind); err != nil {
				return err
			}
		}
	}
	return r.writable(s, d.Artifacts, runner.ContainerArtifacts, bind)
}

func (r *Runner) writable(s *containerSpec, src, dst string, bind func(src, dst, mode string) error) error {
	if src == "" {
		return nil
	}
	if err := os.Chmod(src, 0o777); err != nil {
		return fmt.Errorf("opening %s to the container's user: %w", src, err)
	}
	s.writable = append(s.writable, src)
	return bind(src, dst, "rw")
}

// readableByAll lets any uid read a state snapshot.
func readableByAll(dir string) error {
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			return os.Chmod(p, mode.Perm()|0o555)
		case mode.IsRegular():
			return os.Chmod(p, mode.Perm()|0o444)
		}
		return nil
	})
}

// owner is who must own the step's files afterwards (nil: nobody needs
// to, the worker is root).
func (r *Runner) owner() *Owner {
	if r.Owner != nil {
		return r.Owner
	}
	if uid := os.Geteuid(); uid != 0 {
		return &Owner{UID: uid, GID: os.Getegid()}
	}
	return nil
}

// fixOwnership gives the worker what a container running as another
// user (root, most often) wrote to the writable mounts: a non-root worker
// could neither read nor delete a root-owned 0600 file or the contents
// of a root-owned directory. A short container of the same image, as
// root, hands them over; an image without chown leaves them (and a
// warning).
func (r *Runner) fixOwnership(ctx context.Context, spec *containerSpec, job *runner.Job, log *slog.Logger) {
	own := r.owner()
	if own == nil || !foreignFiles(spec.writable, own.UID) {
		return
	}
	fix := &containerSpec{
		Image:      spec.Image,
		Entrypoint: []string{"chown", "-R", fmt.Sprintf("%d:%d", own.UID, own.GID)},
		Env:        []string{},
		Labels:     spec.Labels,
		HostConfig: hostConfig{LogConfig: logConfig{Type: "none", Config: map[string]string{}}, NetworkMode: "none"},
		name:       spec.name + "-chown",
	}
	for i, dir := range spec.writable {
		target := "/stroem-chown/" + strconv.Itoa(i)
		fix.HostConfig.Binds = append(fix.HostConfig.Binds, dir+":"+target+":rw")
		fix.Entrypoint = append(fix.Entrypoint, target)
	}
	body := struct {
		*containerSpec
		User string
	}{fix, "0:0"}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	id, err := r.Client.CreateContainer(cctx, fix.name, body)
	if err != nil {
		log.Warn("the step left files the worker cannot own; handing them over failed", "error", err.Error())
		return
	}
	defer r.remove(ctx, id, log)
	if err := r.Client.Start(cctx, id); err != nil {
		log.Warn("the step left files the worker cannot own; handing them over failed", "error", err.Error())
		return
	}
	if code, err := r.Client.Wait(cctx, id); err != nil || code != 0 {
		log.Warn("the step left files the worker cannot own; chown in the step's image failed", "exit_code", code, "error", errString(err))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// foreignFiles reports whether anything below dirs is owned by another
// uid than uid.
func foreignFiles(dirs []string, uid int) bool {
	errFound := errors.New("found")
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return errFound // unreadable: someone else's
			}
			info, err := e.Info()
			if err != nil {
				return nil
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
				return errFound
			}
			return nil
		})
		if err != nil {
			return true
		}
	}
	return false
}

// parseCPU reads a Kubernetes-style CPU quantity ("500m", "2", "1.5") as
// nano-CPUs; "" is no limit.
func parseCPU(q string) (int64, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return 0, nil
	}
	scale := 1e9
	if n, ok := strings.CutSuffix(q, "m"); ok {
		q, scale = n, 1e6
	}
	v, err := strconv.ParseFloat(q, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a CPU amount like 500m or 2", q)
	}
	return int64(v * scale), nil
}

// parseMemory reads a Kubernetes-style memory quantity ("512Mi", "1Gi",
// "500M", "1e9", "2048") as bytes; "" is no limit.
func parseMemory(q string) (int64, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
		{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
	}
	num, mult := q, 1.0
	for _, u := range units {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*mult > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a memory amount like 512Mi or 1Gi", q)
	}
	return int64(v * mult), nil
}
