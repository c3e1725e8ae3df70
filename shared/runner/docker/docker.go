package docker

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"golang.org/x/sys/unix"
)

// Labels on every container the runner creates. LabelHome and LabelSpool
// let a later start of the same worker home find what a dead worker left.
const (
	LabelApp      = "app"
	AppValue      = "stroem-step"
	LabelJob      = "stroem.io/job-id"
	LabelStep     = "stroem.io/step"
	LabelAttempt  = "stroem.io/attempt"
	LabelWorkerID = "stroem.io/worker-id"
	LabelHome     = "stroem.io/home"
	LabelSpool    = "stroem.io/spool"
)

const (
	// drainLinger is how long the output may go on arriving after the
	// container exited before the runner stops reading. The engine itself
	// closes the streams at most 2 s after the exit.
	drainLinger = 10 * time.Second
	// callTimeout bounds the engine calls that are not the step itself
	// (create, start, kill, remove): an engine that hangs must not hang
	// the worker.
	callTimeout = 2 * time.Minute
)

// Runner runs steps as Docker containers, one per step, through the
// Engine API (Docker >= 20.10, podman's compatible API).
type Runner struct {
	Client *Client
	Log    *slog.Logger
	// RunnerImage is runner_image: the image of script steps ("" means
	// the action's image, else config.DefaultRunnerImage).
	RunnerImage string
	// PullPolicy is PullIfNotPresent (""), PullAlways or PullNever.
	PullPolicy string
	// Network is the containers' network mode ("" for the engine's
	// default, e.g. "none", "host", a network name).
	Network string
	// Home names this worker home (HomeLabel) on every container, for
	// Sweep.
	Home string
	// StartupDir is the host directory mounted at /etc/stroem/startup.d
	// when it exists ("" means that same path).
	StartupDir string
	// Getenv reads DOCKER_CONFIG and HOME for registry credentials (nil:
	// os.Getenv).
	Getenv func(string) string
	// Owner, when set, is who must own what a step wrote to its writable
	// mounts so the worker can read, upload and delete it; nil means the
	// worker's own user. A root worker needs nothing.
	Owner *Owner

	// credentialHelper replaces running docker-credential-<name> (tests).
	credentialHelper func(ctx context.Context, name, server string) (string, string, error)
}

// Owner is a uid and gid.
type Owner struct{ UID, GID int }

var _ runner.Runner = (*Runner)(nil)

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func (r *Runner) getenv(k string) string {
	if r.Getenv == nil {
		return os.Getenv(k)
	}
	return r.Getenv(k)
}

// Environment: a container inherits nothing of the worker's environment
// (the image's ENV is kept by the engine) and sees its directories at
// the in-container paths.
func (r *Runner) Environment(step *api.Step, _ []string, _ runner.Dirs) ([]string, map[string]string) {
	return nil, runner.ContainerDirVars(step)
}

// handle is what Output.Started records for a container.
type handle struct {
	Kind runner.Kind `json:"kind"`
	Host string      `json:"host"`
	ID   string      `json:"id"`
	Name string      `json:"name"`
}

// Kill removes the container a dead worker's step left, running or not.
func (r *Runner) Kill(ctx context.Context, raw json.RawMessage) error {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("decoding container handle: %w", err)
	}
	c := r.Client
	if h.Host != "" && h.Host != c.Host().Addr {
		// Written by a worker configured with another engine.
		other, err := NewClient(Host{Addr: h.Host, From: "step handle"}, ClientOptions{Getenv: r.Getenv})
		if err != nil {
			return err
		}
		defer other.Close()
		c = other
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	found, err := c.removeFound(ctx, h.ID)
	if err != nil {
		return fmt.Errorf("removing container %s: %w", h.Name, err)
	}
	if found {
		r.log().Warn("removed the container a dead worker's step left", "container", h.Name)
	}
	return nil
}

// Sweep removes the containers of this worker home whose step nobody
// owns any more: lock takes the lock of a step's spool (delivery's
// Deliverer.Lock) and fails while a live worker process holds it. It
// returns how many it removed.
func (r *Runner) Sweep(ctx context.Context, lock func(key string) (unlock func(), err error)) (int, error) {
	if r.Home == "" {
		return 0, nil
	}
	list, err := r.Client.List(ctx, LabelHome+"="+r.Home)
	if err != nil {
		return 0, fmt.Errorf("listing this worker's containers: %w", err)
	}
	removed := 0
	var errs []error
	for _, c := range list {
		key := c.Labels[LabelSpool]
		if key == "" {
			continue
		}
		unlock, err := lock(key)
		if err != nil {
			continue // a live worker process runs it
		}
		found, err := r.Client.removeFound(ctx, c.ID)
		unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("removing leftover container %.12s: %w", c.ID, err))
			continue
		}
		if !found {
			continue
		}
		removed++
		r.log().Warn("removed a container a dead worker left", "container", strings.TrimPrefix(firstName(c.Names), "/"),
			"job_id", c.Labels[LabelJob], "step", c.Labels[LabelStep], "state", c.State)
	}
	return removed, errors.Join(errs...)
}

func firstName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// Run runs the step in a container of its own and removes the container
// on every path.
func (r *Runner) Run(ctx context.Context, job *runner.Job, out runner.Output) (runner.Exit, error) {
	spec, err := r.containerSpec(job)
	if err != nil {
		return runner.Exit{}, err
	}
	if err := r.ensureImage(ctx, spec.Image); err != nil {
		if ctx.Err() != nil {
			return runner.Exit{}, ctx.Err()
		}
		return runner.Exit{}, err
	}
	log := r.log().With("container", spec.name)

	// Calls that leave something behind are not cut short by a stop:
	// their answer says what to remove.
	bg := context.WithoutCancel(ctx)
	id, err := r.create(bg, spec, out, log)
	if err != nil {
		return runner.Exit{}, err
	}
	defer r.remove(bg, id, log)
	if ctx.Err() != nil {
		return runner.Exit{}, ctx.Err()
	}

	// Attached before start, as the only reader (logging is off): nothing
	// the step writes can be missed, and no log driver paces it.
	actx, detach := context.WithCancel(bg)
	defer detach()
	stream, err := r.Client.Attach(actx, id)
	if err != nil {
		return runner.Exit{}, fmt.Errorf("Failed to attach to container: %w", err)
	}
	var readers sync.WaitGroup
	streamDone := make(chan struct{})
	readers.Go(func() {
		defer close(streamDone)
		if err := demux(stream, out); err != nil && actx.Err() == nil {
			log.Warn("reading the container's output", "error", err.Error())
		}
	})
	defer func() {
		stream.Close()
		readers.Wait()
	}()

	sctx, cancel := context.WithTimeout(bg, callTimeout)
	err = r.Client.Start(sctx, id)
	cancel()
	if err != nil {
		return runner.Exit{}, fmt.Errorf("Failed to start container: %w", err)
	}
	log.Info("container started", "image", spec.Image)

	wctx, stopWait := context.WithCancel(bg)
	defer stopWait()
	waitDone := make(chan waitResult, 1)
	readers.Go(func() {
		code, err := r.Client.Wait(wctx, id)
		waitDone <- waitResult{code, err}
	})

	var w waitResult
	stopped := false
	select {
	case w = <-waitDone:
	case <-ctx.Done():
		stopped = true
		w = r.stop(bg, id, job, waitDone, log)
	}
	if w.err != nil {
		return runner.Exit{}, fmt.Errorf("waiting for the container: %w", w.err)
	}
	out.Exited()

	linger := time.NewTimer(drainLinger)
	select {
	case <-streamDone:
	case <-linger.C:
		log.Warn("the container's output did not end after it exited; stopped reading")
		stream.Close()
		<-streamDone
	}
	linger.Stop()
	if w.code == 137 && !stopped {
		r.noteOOM(bg, id, out)
	}
	r.fixOwnership(bg, spec, job, log)
	log.Info("container exited", "exit_code", w.code)
	return runner.Exit{Code: w.code}, nil
}

// create creates the step's container and records its handle.
func (r *Runner) create(bg context.Context, spec *containerSpec, out runner.Output, log *slog.Logger) (string, error) {
	cctx, cancel := context.WithTimeout(bg, callTimeout)
	id, err := r.Client.CreateContainer(cctx, spec.name, spec)
	cancel()
	if err != nil {
		var ae *APIError
		if !errors.As(err, &ae) {
			// The engine may have created it without our hearing of it.
			r.remove(bg, spec.name, log)
		}
		return "", fmt.Errorf("Failed to create container: %w", err)
	}
	data, _ := json.Marshal(handle{Kind: runner.Docker, Host: r.Client.Host().Addr, ID: id, Name: spec.name})
	out.Started(data)
	return id, nil
}

// noteOOM says in the step's log when exit 137 was the kernel's OOM killer.
func (r *Runner) noteOOM(bg context.Context, id string, out runner.Output) {
	ictx, cancel := context.WithTimeout(bg, callTimeout)
	st, err := r.Client.Inspect(ictx, id)
	cancel()
	if err == nil && st.OOMKilled {
		out.Line(runner.Stderr, []byte("stroem-worker: the container was killed for running out of memory (OOMKilled)"))
	}
}

// waitResult is how a container ended: its exit code, or why that is
// not known.
type waitResult struct {
	code int
	err  error
}

// stop asks the container to stop (job.Signal), gives it job.Grace, then
// kills it, and returns how it ended.
func (r *Runner) stop(ctx context.Context, id string, job *runner.Job, waitDone <-chan waitResult, log *slog.Logger) waitResult {
	kill := func(sig syscall.Signal) {
		kctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		if err := r.Client.Kill(kctx, id, signalName(sig)); err != nil {
			log.Warn("signalling the container", "signal", signalName(sig), "error", err.Error())
		}
	}
	kill(job.Signal)
	grace := time.NewTimer(job.Grace)
	defer grace.Stop()
	select {
	case w := <-waitDone:
		return w
	case <-grace.C:
	}
	log.Info("container still running after the grace period; killing it", "grace", job.Grace)
	kill(syscall.SIGKILL)
	return <-waitDone
}

func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return strconv.Itoa(int(sig))
}

// remove removes a container on the way out, whatever happened.
func (r *Runner) remove(ctx context.Context, id string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := r.Client.Remove(ctx, id); err != nil {
		log.Error("removing the container; the next start of this worker removes it", "error", err.Error())
	}
}

// demux reads the engine's multiplexed stream (frames of an 8-byte
// header {stream, 0, 0, 0, big-endian size} and size bytes) and hands each
// stream's lines to out, split per stream, so a line written in pieces or
// many lines written at once come out as the lines they are.
//
// The stream is read ahead of the line splitting, up to queuedFrames
// frames: the engine copies a container's output to the attached
// connection one write at a time, and would otherwise wait for every
// frame's lines to be spooled before it reads the next write.
func demux(r io.Reader, out runner.Output) error {
	frames := make(chan frame, queuedFrames)
	free := make(chan []byte, queuedFrames+2)
	var wg sync.WaitGroup
	wg.Go(func() {
		lines := map[byte]*logstream.LineWriter{
			1: logstream.NewLineWriter(runner.MaxLineBytes, func(l []byte) { out.Line(runner.Stdout, l) }),
			2: logstream.NewLineWriter(runner.MaxLineBytes, func(l []byte) { out.Line(runner.Stderr, l) }),
		}
		for f := range frames {
			lines[f.stream].Write(f.data)
			select {
			case free <- f.data[:0]:
			default:
			}
		}
		lines[1].Close()
		lines[2].Close()
	})
	err := readFrames(r, frames, free)
	close(frames)
	wg.Wait()
	return err
}

// queuedFrames bounds the frames read ahead (the engine's frames are at
// most 32 KiB: 2 MiB in all).
const queuedFrames = 64

// maxFrame is far above any frame an engine sends (Docker's are at most
// 32 KiB); a larger size means the stream is not what it should be.
const maxFrame = 16 << 20

type frame struct {
	stream byte // 1 stdout, 2 stderr
	data   []byte
}

func readFrames(r io.Reader, frames chan<- frame, free <-chan []byte) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading frame header: %w", err)
		}
		size := int(binary.BigEndian.Uint32(hdr[4:]))
		if size > maxFrame {
			return fmt.Errorf("a frame of %d bytes: not the engine's stream format", size)
		}
		stream := hdr[0]
		switch stream {
		case 0, 1:
			stream = 1
		case 2:
		case 3: // the engine's own error about the stream
			msg, _ := io.ReadAll(io.LimitReader(br, int64(size)))
			return fmt.Errorf("engine: %s", strings.TrimSpace(string(msg)))
		default:
			return fmt.Errorf("unknown stream %d in frame header", hdr[0])
		}
		var buf []byte
		select {
		case buf = <-free:
		default:
		}
		if cap(buf) < size {
			buf = make([]byte, size, max(size, 32<<10))
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("reading frame: %w", err)
		}
		frames <- frame{stream, buf}
	}
}

// imageFor is the image a step runs, with ":latest" for a bare name.
func (r *Runner) imageFor(step *api.Step) string {
	return NormalizeImage(runner.ContainerImage(step, r.RunnerImage, config.DefaultRunnerImage))
}

// ensureImage makes the image present as the pull policy says. A pull
// failure is the step's failure only when the image is not there.
func (r *Runner) ensureImage(ctx context.Context, image string) error {
	policy := r.PullPolicy
	if policy == "" {
		policy = PullIfNotPresent
	}
	if policy != PullAlways {
		have, err := r.Client.ImageExists(ctx, image)
		switch {
		case err != nil:
			return fmt.Errorf("Failed to inspect image %s: %w", image, err)
		case have:
			return nil
		case policy == PullNever:
			return fmt.Errorf("Failed to pull image %s: it is not on the engine and docker.pull_policy is never", image)
		}
	}
	auth, err := credentials{getenv: r.getenv, helper: r.credentialHelper}.header(ctx, image)
	if err != nil {
		return fmt.Errorf("Failed to pull image %s: %w", image, err)
	}
	begin := time.Now()
	r.log().Info("pulling image", "image", image)
	perr := r.Client.PullImage(ctx, image, auth)
	if perr == nil {
		r.log().Info("pulled image", "image", image, "took", time.Since(begin).Round(time.Millisecond))
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if policy == PullAlways {
		if have, err := r.Client.ImageExists(ctx, image); err == nil && have {
			r.log().Warn("pulling the image failed; running the copy the engine has", "image", image, "error", perr.Error())
			return nil
		}
	}
	return fmt.Errorf("Failed to pull image %s: %w", image, perr)
}
