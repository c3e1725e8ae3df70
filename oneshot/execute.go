package oneshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/process"
	"github.com/stroem-worker/stroem-worker/shared/runner"
)

// stop reasons, first one wins.
const (
	reasonNone int32 = iota
	reasonCancelled
	reasonTimeout
	reasonShutdown
	reasonDeadline
	reasonExited
)

// execute prepares the step, runs it and does what follows a run (state
// and artifact upload); it never returns an error, only the result to
// report.
func (w *worker) execute(ctx context.Context, s *stepRun) stepResult {
	defer s.close()
	if res, ok := w.prepare(ctx, s); !ok {
		return res
	}
	k := newSink(s, w.events)
	w.running.Store(k)
	defer w.running.Store(nil)
	res := w.watch(ctx, s, k)
	output, state, _ := k.result()
	res.Output = output
	if k.tooLarge && res.Error == "" {
		return s.failure(fmt.Sprintf("Step output too large: an OUTPUT: value must stay under %d bytes to fit the server's 2 MiB limit", maxOutputBytes))
	}
	if res.ran {
		// State goes up whenever the step ran to an exit of its own, even a
		// failing one; not after a timeout or a stop by us.
		if err := w.uploadState(context.WithoutCancel(ctx), s.step, s.job.Dirs, state); err != nil {
			s.log.Error("uploading state", "error", err.Error())
			_ = s.spool.Append("stderr", time.Now(), []byte("state upload failed: "+err.Error()))
		}
	}
	if res.ExitCode == 0 && res.Error == "" {
		n, err := w.uploadArtifacts(context.WithoutCancel(ctx), s.step, s.job.Dirs.Artifacts, s.log)
		if err != nil {
			msg := "artifact upload failed: " + err.Error()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			if derr := w.client.DeleteArtifacts(dctx, s.step.JobID, s.step.StepName); derr != nil {
				s.log.Warn("deleting partial artifacts", "error", derr.Error())
			}
			cancel()
			_ = s.spool.Append("stderr", time.Now(), []byte(msg))
			return stepResult{ExitCode: 1, Error: msg, Output: res.Output}
		}
		if n > 0 {
			s.log.Info("uploaded artifacts", "count", n)
		}
	}
	return res
}

// watch runs the step with its runner while watching for the reasons to
// stop it: the job cancelled, the step timed out, the worker shutting
// down or reaching its deadline.
func (w *worker) watch(ctx context.Context, s *stepRun, k *sink) stepResult {
	var reason atomic.Int32
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var watchers sync.WaitGroup
	stopWith := func(why int32) {
		if k.exited.Load() {
			// Ended on its own: a cancel seen while its last output drains
			// must not turn the result into a failure.
			reason.CompareAndSwap(reasonNone, reasonExited)
		}
		if reason.CompareAndSwap(reasonNone, why) {
			stopRun()
		}
	}
	watchers.Go(func() { w.pollCancelled(watchCtx, s.step.JobID, func() { stopWith(reasonCancelled) }, s.log) })
	var timeout <-chan time.Time
	if s.step.TimeoutSecs > 0 {
		// The step's clock starts when it is spawned (contract §7).
		t := time.NewTimer(time.Duration(s.step.TimeoutSecs) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	watchers.Go(func() {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				stopWith(reasonDeadline)
			} else {
				stopWith(reasonShutdown)
			}
		case <-timeout:
			stopWith(reasonTimeout)
		case <-watchCtx.Done():
		}
	})
	exit, err := s.runner.Run(runCtx, s.job, k)
	if k.exited.Load() {
		reason.CompareAndSwap(reasonNone, reasonExited)
	}
	stopWatch()
	watchers.Wait()
	_, _, tail := k.result()
	return w.result(s, exit, err, reason.Load(), tail)
}

// result turns how the step's code ended, and why it was stopped if it
// was, into what the server's own worker would report (contract §5).
func (w *worker) result(s *stepRun, exit runner.Exit, err error, why int32, tail *stderrTail) stepResult {
	res := stepResult{ExitCode: exit.Code}
	if exit.Signal != 0 {
		res.Signal, res.SignalNumber = process.SignalName(exit.Signal), int(exit.Signal)
	}
	var re *runner.Error
	switch {
	case err != nil && why != reasonTimeout && why != reasonCancelled && why != reasonShutdown && why != reasonDeadline:
		msg := "Failed to execute step: " + err.Error()
		if errors.As(err, &re) {
			msg = re.Text
		}
		return s.failure(msg)
	case why == reasonTimeout:
		res = stepResult{ExitCode: -1, Signal: res.Signal, SignalNumber: res.SignalNumber, Error: fmt.Sprintf("Step timed out after %ds", s.step.TimeoutSecs)}
	case why == reasonCancelled:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, "Job cancelled")
	case why == reasonShutdown:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, "Worker shutting down")
	case why == reasonDeadline:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, w.deadlineMsg)
	case exit.Signal != 0:
		res.ExitCode = -1
		res.Error = errorText(-1, tail, "Process killed by signal "+res.Signal)
		res.ran = true
	case exit.Code != 0:
		res.Error = errorText(exit.Code, tail, "")
		res.ran = true
	default:
		res.ran = true
	}
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

// pollCancelled asks the server every cancel_poll_interval whether the
// job was cancelled (contract §6). The first ask waits one interval: a
// job cancelled before its step was claimed has its steps cancelled by
// the server, and short steps then cost no extra request.
func (w *worker) pollCancelled(ctx context.Context, jobID string, onCancel func(), log *slog.Logger) {
	tick := time.NewTicker(w.cfg.CancelPollInterval())
	defer tick.Stop()
	client := w.client.WithRetry(api.Retry{Attempts: 1})
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
