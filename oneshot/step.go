package oneshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"github.com/stroem-worker/stroem-worker/shared/process"
	"github.com/stroem-worker/stroem-worker/shared/redact"
	"golang.org/x/sys/unix"
)

const (
	// stderrTailBytes caps the stderr quoted in a failed step's error.
	stderrTailBytes = 64 << 10
	// drainLinger is how long, after the step's main process exits, its
	// output pipes may stay open (a background job finishing its last
	// lines) before what is left of the step is killed.
	drainLinger = 2 * time.Second
	// pipeSize is asked for the step's output pipes.
	pipeSize = 1 << 20
)

// stepResult is what was (or is to be) reported for a step.
type stepResult struct {
	ExitCode     int
	Signal       string
	SignalNumber int
	Error        string
	Output       json.RawMessage
	Delivered    bool
	// Log figures for the supervisor's metrics.
	Lines, Bytes, Dropped int64
	// ran is true when the process exited on its own (not cancelled,
	// timed out or failed to start).
	ran bool
}

func (s stepResult) completion() api.CompleteRequest {
	req := api.CompleteRequest{ExitCode: s.ExitCode, Output: s.Output}
	if s.Error != "" {
		msg := s.Error
		req.Error = &msg
	}
	return req
}

// stop reasons, first one wins.
const (
	reasonNone int32 = iota
	reasonCancelled
	reasonTimeout
	reasonShutdown
	reasonDeadline
	reasonExited
)

// SpoolKey names a step's spool (and its lock and step directory): any
// step name, "process[0]" or one with slashes, makes a safe file name.
func SpoolKey(jobID, step string) string { return logstream.Key(jobID, step) }

// SpoolRoot is the directory holding the spools of a worker's steps.
func SpoolRoot(cfg *config.Config) string { return filepath.Join(cfg.WorkspaceDir, "spool") }

func (r *runner) spoolRoot() string { return SpoolRoot(r.cfg) }

// runStep runs a claimed step and delivers its logs and result.
func (r *runner) runStep(ctx context.Context, workerID string, step *api.Step, log *slog.Logger) (stepResult, error) {
	root := r.spoolRoot()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return r.reportWithoutSpool(ctx, step, fmt.Errorf("creating spool directory: %w", err), log)
	}
	key := SpoolKey(step.JobID, step.StepName)
	lock, err := lockSpool(root, key)
	if err != nil {
		return r.reportWithoutSpool(ctx, step, err, log)
	}
	defer lock.release()
	// A spool of an earlier attempt of this step, still undelivered, goes
	// out first (a retried step claimed again on this host); its marker of
	// a delivered completion must not carry over to this attempt.
	if _, err := os.Stat(filepath.Join(root, key)); err == nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.DeliveryTimeout())
		if err := deliverSpoolLocked(dctx, filepath.Join(root, key), r.client, "the step was claimed again"); err != nil {
			log.Warn("an earlier attempt's spool could not be delivered; it is replaced", "error", err.Error())
		}
		cancel()
		os.Remove(filepath.Join(root, key, completionSentFile))
	}
	sp, err := logstream.Create(root, key, logstream.Meta{JobID: step.JobID, StepName: step.StepName, WorkerID: workerID})
	if err != nil {
		return r.reportWithoutSpool(ctx, step, fmt.Errorf("creating log spool: %w", err), log)
	}

	// Logs ship for the whole step on a context that a shutdown signal does
	// not cancel; it is bounded by delivery_timeout once the step has ended.
	shipCtx, stopShip := context.WithCancel(context.WithoutCancel(ctx))
	defer stopShip()
	type shipped struct {
		stats logstream.Stats
		err   error
	}
	shipDone := make(chan shipped, 1)
	go func() {
		st, err := r.ship(shipCtx, sp, step)
		shipDone <- shipped{st, err}
	}()

	res := r.execute(ctx, workerID, step, sp, log)
	if err := sp.Close(); err != nil {
		log.Error("closing log spool", "error", err.Error())
	}
	timer := time.AfterFunc(r.deliveryWindow(), stopShip)
	defer timer.Stop()
	sh := <-shipDone
	logErr := sh.err
	res.Lines, res.Bytes, res.Dropped = sh.stats.Lines, sh.stats.Bytes, sh.stats.Dropped
	if logErr != nil {
		log.Error("step logs not fully delivered; they stay in the spool", "error", logErr.Error())
	}
	return r.finish(shipCtx, sp, step, res, logErr, log)
}

// finish saves the completion in the spool, sends it, and removes the
// spool once everything is delivered.
func (r *runner) finish(ctx context.Context, sp *logstream.Spool, step *api.Step, res stepResult, logErr error, log *slog.Logger) (stepResult, error) {
	body, err := json.Marshal(res.completion())
	if err != nil {
		return res, fmt.Errorf("encoding completion: %w", err)
	}
	if err := sp.SaveCompletion(body); err != nil {
		log.Error("saving completion to spool", "error", err.Error())
	}
	err = r.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 15 * time.Second}).
		CompleteRaw(ctx, step.JobID, step.StepName, body)
	if err != nil {
		log.Error("step result not delivered; it stays in the spool for the next run", "error", err.Error())
		return res, fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	res.Delivered = true
	// Told before the spool goes, so a supervisor never reports a step
	// whose result is already delivered.
	r.events.Emit(Event{Kind: "delivered"})
	log.Info("step reported", "exit_code", res.ExitCode, "failed", res.ExitCode != 0 || res.Error != "")
	if logErr != nil {
		markCompletionSent(sp.Dir())
		return res, fmt.Errorf("%w: logs: %w", ErrNotDelivered, logErr)
	}
	if err := sp.Remove(); err != nil {
		log.Warn("removing delivered spool", "error", err.Error())
	}
	return res, nil
}

// reportWithoutSpool reports a step failed when even its spool cannot be
// made (disk full, permissions): the step must not stay running.
func (r *runner) reportWithoutSpool(ctx context.Context, step *api.Step, cause error, log *slog.Logger) (stepResult, error) {
	res := stepResult{ExitCode: -1, Error: "Failed to prepare step: " + cause.Error()}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.DeliveryTimeout())
	defer cancel()
	if err := r.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 15 * time.Second}).
		Complete(dctx, step.JobID, step.StepName, res.completion()); err != nil {
		return res, fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	res.Delivered = true
	log.Error("step failed before it could run", "error", cause.Error())
	return res, nil
}

func (r *runner) ship(ctx context.Context, sp *logstream.Spool, step *api.Step) (logstream.Stats, error) {
	return logstream.Ship(ctx, sp, logstream.ShipOptions{
		StepName: step.StepName,
		Send: func(ctx context.Context, body []byte) error {
			return r.client.PostLogs(ctx, step.JobID, body)
		},
		Permanent: api.IsPermanent,
		Logger:    r.log,
	})
}

// execute fetches the workspace, reports start and runs the step's
// process; it never returns an error, only the result to report.
func (r *runner) execute(ctx context.Context, workerID string, step *api.Step, sp *logstream.Spool, log *slog.Logger) stepResult {
	fail := func(msg string) stepResult {
		// A worker-generated stderr line, as the server's own worker posts
		// one before reporting such a failure (contract §3).
		_ = sp.Append("stderr", time.Now(), []byte(r.redactor.Line([]byte(msg))))
		return stepResult{ExitCode: -1, Error: msg}
	}
	workDir := r.cfg.WorkspaceDir
	if step.Workspace != "" {
		// Transient failures (a restarting server, 503s) are retried for as
		// long as a result would be; only a lasting failure fails the step.
		wctx, cancel := context.WithTimeout(ctx, r.cfg.DeliveryTimeout())
		co, err := r.workspaces().Get(wctx, step.Workspace, step.Revision)
		cancel()
		if err != nil {
			// No start report: the server's own worker sends none either.
			return fail("Failed to download workspace: " + err.Error())
		}
		defer co.Release()
		workDir = co.Dir
	}
	startCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.DeliveryTimeout())
	err := r.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 10 * time.Second}).
		Start(startCtx, step.JobID, step.StepName, workerID)
	cancel()
	if err != nil {
		return fail("Failed to report step start: " + err.Error())
	}
	if step.StepName == "" {
		return fail("Failed to build run config: claimed step has no step_name")
	}
	spec, err := api.ParseActionSpec(step.ActionSpec)
	if err != nil {
		return fail("Failed to build run config: " + err.Error())
	}
	dirs, err := newStepDirs(filepath.Join(r.cfg.WorkspaceDir, "steps", SpoolKey(step.JobID, step.StepName)))
	if err != nil {
		return fail("Failed to build run config: " + err.Error())
	}
	defer os.RemoveAll(dirs.root)
	if err := r.downloadState(ctx, step, dirs); err != nil {
		return fail("Failed to download state: " + err.Error())
	}
	env := stepEnv(r.environ, r.cfg.WorkerToken, spec, step, dirs.env())
	lookPath := pathLookup(env)
	env, resolved, err := resolveRefs(ctx, env, lookPath)
	if err != nil {
		return fail(err.Error())
	}
	r.redactor = redact.FromEnv(env, append(resolved, r.cfg.WorkerToken)...)
	cmd, err := buildCommand(step, spec, workDir, lookPath)
	if err != nil {
		return fail(err.Error())
	}
	if cmd.TempFile != "" {
		defer os.Remove(cmd.TempFile)
	}

	var deadline time.Time
	if step.TimeoutSecs > 0 {
		// The step's clock starts when it is spawned (contract §7).
		deadline = time.Now().Add(time.Duration(step.TimeoutSecs) * time.Second)
	}
	if cmd.Setup != "" {
		setup := command{Path: "sh", Args: []string{"-c", cmd.Setup}, Dir: workDir}
		res := r.spawn(ctx, step, setup, env, deadline, sp, nil, log)
		if res.Error != "" {
			if res.ExitCode > 0 {
				res.Error = fmt.Sprintf("Dependency installation failed (exit code %d): %s", res.ExitCode, cmd.Setup)
			}
			res.ExitCode = -1
			return res
		}
	}
	var (
		mu     sync.Mutex
		output json.RawMessage
		state  stateLines
	)
	res := r.spawn(ctx, step, cmd, env, deadline, sp, func(line []byte) {
		if v, ok := parseOutputLine(line); ok {
			mu.Lock()
			output = v
			mu.Unlock()
			return
		}
		mu.Lock()
		state.add(line)
		mu.Unlock()
	}, log)
	mu.Lock()
	res.Output = output
	mu.Unlock()
	if res.ran {
		// State goes up whenever the process ran to an exit of its own,
		// even a failing one; not after a timeout or a kill by us.
		if err := r.uploadState(context.WithoutCancel(ctx), step, dirs, &state); err != nil {
			log.Error("uploading state", "error", err.Error())
			_ = sp.Append("stderr", time.Now(), []byte("state upload failed: "+err.Error()))
		}
	}
	if res.ExitCode == 0 && res.Error == "" {
		n, err := r.uploadArtifacts(context.WithoutCancel(ctx), step, dirs.artifacts, log)
		if err != nil {
			msg := "artifact upload failed: " + err.Error()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			if derr := r.client.DeleteArtifacts(dctx, step.JobID, step.StepName); derr != nil {
				log.Warn("deleting partial artifacts", "error", derr.Error())
			}
			cancel()
			_ = sp.Append("stderr", time.Now(), []byte(msg))
			return stepResult{ExitCode: 1, Error: msg, Output: res.Output}
		}
		if n > 0 {
			log.Info("uploaded artifacts", "count", n)
		}
	}
	return res
}

// spawn starts a process, streams its output into the spool (masked),
// enforces cancellation, the deadline and shutdown, and returns the
// result. onStdout, when set, sees each unmasked stdout line.
func (r *runner) spawn(ctx context.Context, step *api.Step, cmd command, env []string, deadline time.Time, sp *logstream.Spool, onStdout func([]byte), log *slog.Logger) stepResult {
	outR, outW, err := os.Pipe()
	if err != nil {
		return stepResult{ExitCode: -1, Error: "Failed to execute step: creating pipe: " + err.Error()}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return stepResult{ExitCode: -1, Error: "Failed to execute step: creating pipe: " + err.Error()}
	}
	// Larger pipes (best effort) let a fast writer run ahead of the reader
	// with fewer wake-ups; the default 64 KiB costs a syscall per 64 KiB.
	for _, f := range []*os.File{outR, errR} {
		_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, pipeSize)
	}
	proc, err := process.Start(process.Spec{Path: cmd.Path, Args: cmd.Args, Dir: cmd.Dir, Env: env, Stdout: outW, Stderr: errW})
	// Our copies of the write ends must go, or the readers never see EOF.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		msg := "Failed to execute step: " + err.Error()
		_ = sp.Append("stderr", time.Now(), r.redactor.Line([]byte(msg)))
		return stepResult{ExitCode: -1, Error: msg}
	}
	log.Info("process started", "pid", proc.Pid(), "path", cmd.Path)
	r.events.Emit(Event{Kind: "spawned", Pid: proc.Pid()})

	tail := newStderrTail(stderrTailBytes)
	var readers sync.WaitGroup
	read := func(f *os.File, stream string, each func([]byte)) {
		err := logstream.ReadLines(f, logstream.MaxLineBytes, func(line []byte) {
			if each != nil {
				each(line)
			}
			masked := r.redactor.Line(line)
			if stream == "stderr" {
				tail.add(masked)
			}
			if err := sp.Append(stream, time.Now(), masked); err != nil {
				log.Error("spooling output", "stream", stream, "error", err.Error())
			}
		})
		if err != nil && !errors.Is(err, os.ErrClosed) {
			log.Warn("reading output", "stream", stream, "error", err.Error())
		}
	}
	readers.Go(func() { read(outR, "stdout", onStdout) })
	readers.Go(func() { read(errR, "stderr", nil) })
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()

	// Watchers: cancellation poll, step timeout, shutdown. The first to fire
	// sets the reason and terminates the process group.
	var reason atomic.Int32
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var watchers sync.WaitGroup
	stopWith := func(why int32) {
		if reason.CompareAndSwap(reasonNone, why) {
			watchers.Go(func() {
				if err := proc.Terminate(watchCtx, r.cfg.CancelSignal(), r.cfg.CancelGrace()); err != nil && watchCtx.Err() == nil {
					log.Error("terminating step", "error", err.Error())
				}
			})
		}
	}
	watchers.Go(func() { r.pollCancelled(watchCtx, step.JobID, func() { stopWith(reasonCancelled) }, log) })
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	exited := make(chan struct{})
	var status process.ExitStatus
	var waitErr error
	go func() { status, waitErr = proc.Wait(); close(exited) }()
	for done := false; !done; {
		select {
		case <-exited:
			done = true
			// The process ended on its own: a cancel seen while its last
			// output drains must not turn the result into a failure.
			reason.CompareAndSwap(reasonNone, reasonExited)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				stopWith(reasonDeadline)
			} else {
				stopWith(reasonShutdown)
			}
			ctx = context.WithoutCancel(ctx)
		case <-timeout:
			stopWith(reasonTimeout)
			timeout = nil
		}
	}
	r.reapRest(proc, readersDone, outR, errR, log)
	stopWatch()
	watchers.Wait()

	res := stepResult{ExitCode: status.Code}
	if status.Signaled {
		res.Signal, res.SignalNumber = process.SignalName(status.Signal), int(status.Signal)
	}
	switch {
	case waitErr != nil:
		res = stepResult{ExitCode: -1, Error: "Failed to execute step: waiting for process: " + waitErr.Error()}
	case reason.Load() == reasonTimeout:
		res = stepResult{ExitCode: -1, Signal: res.Signal, SignalNumber: res.SignalNumber, Error: fmt.Sprintf("Step timed out after %ds", step.TimeoutSecs)}
	case reason.Load() == reasonCancelled:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, "Job cancelled")
	case reason.Load() == reasonShutdown:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, "Worker shutting down")
	case reason.Load() == reasonDeadline:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, r.deadlineMsg)
	case status.Signaled:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, "Process killed by signal "+res.Signal)
		res.ran = true
	case status.Code != 0:
		res.Error = errorText(status.Code, tail, "")
		res.ran = true
	default:
		res.ran = true
	}
	log.Info("process finished", "exit_code", res.ExitCode, "signal", res.Signal)
	return res
}

// errorText is the completion error the server's own worker sends
// (contract §5): "Exit code: N\nStderr: <stderr>" plus a closing note.
func errorText(code int, tail *stderrTail, note string) string {
	msg := fmt.Sprintf("Exit code: %d\nStderr: %s", code, tail.String())
	if note != "" {
		if tail.size == 0 {
			msg += note
		} else {
			msg += "\n" + note
		}
	}
	return msg
}

// reapRest deals with what remains once the step's main process exited:
// output still buffered in the pipes is read, processes left in the
// group or orphaned to us are killed, and pipes held open by processes
// beyond reach are closed, so the worker never hangs on them.
func (r *runner) reapRest(proc *process.Process, readersDone <-chan struct{}, outR, errR *os.File, log *slog.Logger) {
	linger := time.NewTimer(drainLinger)
	defer linger.Stop()
	select {
	case <-readersDone:
	case <-linger.C:
		log.Warn("step's processes still hold its output open after it exited; killing them")
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CancelGrace()+5*time.Second)
	defer cancel()
	if err := proc.Terminate(ctx, r.cfg.CancelSignal(), 0); err != nil {
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

// pollCancelled asks the server every cancel_poll_interval whether the
// job was cancelled (contract §6). The first ask waits one interval: a
// job cancelled before its step was claimed has its steps cancelled by
// the server, and short steps then cost no extra request.
func (r *runner) pollCancelled(ctx context.Context, jobID string, onCancel func(), log *slog.Logger) {
	tick := time.NewTicker(r.cfg.CancelPollInterval())
	defer tick.Stop()
	client := r.client.WithRetry(api.Retry{Attempts: 1})
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cancelled, err := client.Cancelled(ctx, jobID)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("checking cancellation", "error", err.Error())
		case cancelled:
			log.Info("job cancelled; stopping the step")
			onCancel()
			return
		}
	}
}

// deliveryWindow is how long logs and the result may take once the step
// has ended: delivery_timeout_secs, cut to what is left before DeliverBy
// (a pod or a Lambda invocation that ends then takes the spool with it).
func (r *runner) deliveryWindow() time.Duration {
	d := r.cfg.DeliveryTimeout()
	if !r.deliverBy.IsZero() {
		d = min(d, max(time.Until(r.deliverBy), 0))
	}
	return d
}
