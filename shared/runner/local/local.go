package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"github.com/stroem-worker/stroem-worker/shared/process"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"golang.org/x/sys/unix"
)

const (
	// drainLinger is how long, after the step's main process exits on its
	// own, its output pipes may stay open (a background job finishing its
	// last lines) before what is left of the step is killed.
	drainLinger = 2 * time.Second
	// pipeSize is asked for the step's output pipes: a fast writer runs
	// ahead of the reader with fewer wake-ups than with the default 64 KiB.
	pipeSize = 1 << 20
)

// Runner runs steps as local processes.
type Runner struct {
	Log *slog.Logger
}

var _ runner.Runner = (*Runner)(nil)

// Environment: a local step inherits the worker's environment (the caller
// has removed the worker's secrets) and sees its directories where they
// are.
func (r *Runner) Environment(_ *api.Step, worker []string, d runner.Dirs) ([]string, map[string]string) {
	return worker, map[string]string{
		"ARTIFACTS_DIR": d.Artifacts,
		"STATE_DIR":     d.State, "STATE_OUT_DIR": d.StateOut,
		"GLOBAL_STATE_DIR": d.GlobalState, "GLOBAL_STATE_OUT_DIR": d.GlobalStateOut,
	}
}

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// Run runs the step's dependency installation, if any, then its command.
func (r *Runner) Run(ctx context.Context, job *runner.Job, out runner.Output) (runner.Exit, error) {
	cmd, err := buildCommand(job.Step, job.Spec, job.Workspace, pathLookup(job.Env))
	if err != nil {
		return runner.Exit{}, &runner.Error{Text: err.Error()}
	}
	if cmd.TempFile != "" {
		defer os.Remove(cmd.TempFile)
	}
	if cmd.Setup != "" {
		setup := command{Path: "sh", Args: []string{"-c", cmd.Setup}, Dir: cmd.Dir}
		exit, err := r.spawn(ctx, setup, job, out, true)
		if err != nil || ctx.Err() != nil {
			return exit, err
		}
		switch {
		case exit.Signal != 0:
			return exit, runner.Errorf("Dependency installation failed (signal %s): %s", process.SignalName(exit.Signal), cmd.Setup)
		case exit.Code != 0:
			return exit, runner.Errorf("Dependency installation failed (exit code %d): %s", exit.Code, cmd.Setup)
		}
	}
	return r.spawn(ctx, cmd, job, out, false)
}

// handle is what Output.Started records for a local step.
type handle struct {
	Kind runner.Kind `json:"kind"`
	process.Handle
}

// Kill kills what is left of a dead worker's step: its process group, if
// it is still the same one. (Processes that escaped the group were
// reparented to init with the worker gone, out of reach.)
func (r *Runner) Kill(ctx context.Context, raw json.RawMessage) error {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("decoding process handle: %w", err)
	}
	found, err := process.KillGroup(ctx, h.Handle)
	if found {
		r.log().Warn("killed what a dead worker's step left running", "pgid", h.PGID)
	}
	return err
}

// spawn runs one process to its end, streaming its output lines to out.
// When ctx ends it stops the process tree (job.Signal, job.Grace, kill).
func (r *Runner) spawn(ctx context.Context, cmd command, job *runner.Job, out runner.Output, setup bool) (runner.Exit, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return runner.Exit{}, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return runner.Exit{}, err
	}
	for _, f := range []*os.File{outR, errR} {
		_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, pipeSize)
	}
	proc, err := process.Start(process.Spec{Path: cmd.Path, Args: cmd.Args, Dir: cmd.Dir, Env: job.Env,
		Stdout: outW, Stderr: errW, DieWithParent: true})
	// Our copies of the write ends must go, or the readers never see EOF.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return runner.Exit{}, err
	}
	log := r.log()
	log.Info("process started", "pid", proc.Pid(), "path", cmd.Path)
	if h, err := proc.Handle(); err == nil {
		data, _ := json.Marshal(handle{Kind: runner.Local, Handle: h})
		out.Started(data)
	}

	var readers sync.WaitGroup
	read := func(f *os.File, stream string) {
		err := logstream.ReadLines(f, runner.MaxLineBytes, func(line []byte) { out.Line(stream, line) })
		if err != nil && !errors.Is(err, os.ErrClosed) {
			log.Warn("reading output", "stream", stream, "error", err.Error())
		}
	}
	readers.Go(func() { read(outR, runner.Stdout) })
	readers.Go(func() { read(errR, runner.Stderr) })
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()

	exited := make(chan struct{})
	var status process.ExitStatus
	var waitErr error
	go func() {
		status, waitErr = proc.Wait()
		if !setup {
			out.Exited()
		}
		close(exited)
	}()
	var stopped chan struct{}
	select {
	case <-exited:
	case <-ctx.Done():
		// The whole tree gets its grace from the signal on, even once the
		// leader is gone: a child may need it to clean up.
		stopped = make(chan struct{})
		go func() {
			defer close(stopped)
			if err := proc.StopTree(context.WithoutCancel(ctx), job.Signal, job.Grace); err != nil {
				log.Error("stopping the step", "error", err.Error())
			}
		}()
		<-exited
		<-stopped
	}
	r.reapRest(proc, job, readersDone, outR, errR)
	if waitErr != nil {
		return runner.Exit{}, waitErr
	}
	exit := runner.Exit{Code: status.Code}
	if status.Signaled {
		exit.Signal = status.Signal
	}
	log.Info("process finished", "exit_code", exit.Code, "signal", exit.Signal)
	return exit, nil
}

// reapRest deals with what remains once the step's main process exited:
// output still buffered in the pipes is read, processes left in the
// group or orphaned to us are killed, and pipes held open by processes
// beyond reach are closed, so the worker never hangs on them.
func (r *Runner) reapRest(proc *process.Process, job *runner.Job, readersDone <-chan struct{}, outR, errR *os.File) {
	log := r.log()
	linger := time.NewTimer(drainLinger)
	defer linger.Stop()
	select {
	case <-readersDone:
	case <-linger.C:
		log.Warn("step's processes still hold its output open after it exited; killing them")
	}
	ctx, cancel := context.WithTimeout(context.Background(), job.Grace+5*time.Second)
	defer cancel()
	if err := proc.Terminate(ctx, job.Signal, 0); err != nil {
		log.Warn("killing the step's process group", "error", err.Error())
	}
	if killed, err := process.Sweep(proc.Pid()); err != nil {
		log.Warn("sweeping orphaned processes", "error", err.Error())
	} else if len(killed) > 0 {
		log.Warn("killed processes the step left behind", "pids", killed)
	}
	linger.Reset(drainLinger)
	select {
	case <-readersDone:
	case <-linger.C:
		log.Warn("closing output pipes still held by processes out of reach")
		outR.Close()
		errR.Close()
		<-readersDone
	}
	outR.Close()
	errR.Close()
}
