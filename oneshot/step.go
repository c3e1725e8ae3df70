package oneshot

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/handoff"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
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
	Lines, Bytes, Dropped, Lost int64
	// ran is true when the step's code exited on its own (not cancelled,
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

// runStep is one step from claim to delivered result: it takes the
// attempt's spool, ships the log while the step is prepared and run
// (execute), and delivers the completion (finish). The spool outlives a
// failed delivery, for the next run or the supervisor.
func (w *worker) runStep(ctx context.Context, workerID, attempt string, step *api.Step, log *slog.Logger) (stepResult, error) {
	key := delivery.Key(step.JobID, step.StepName, attempt)
	lock, err := w.deliverer.Lock(key)
	if err != nil {
		return w.reportWithoutSpool(ctx, step, fmt.Errorf("locking log spool: %w", err), log)
	}
	defer lock.Unlock()
	// From now on no result of an earlier attempt of this step on this host
	// is sent: it would overwrite this attempt on the server.
	superseded, err := w.deliverer.Supersede(ctx, step.JobID, step.StepName, attempt)
	if err != nil {
		log.Warn("marking earlier attempts of the step", "error", err.Error())
	}
	sp, err := logstream.Create(w.deliverer.Root, key, logstream.Meta{JobID: step.JobID, StepName: step.StepName, WorkerID: workerID})
	if err != nil {
		return w.reportWithoutSpool(ctx, step, fmt.Errorf("creating log spool: %w", err), log)
	}
	if superseded > 0 {
		msg := fmt.Sprintf("stroem-worker: an earlier attempt of this step on this host had not reported its result; that result is discarded (%d attempt(s))", superseded)
		log.Warn(msg)
		_ = sp.Append("stderr", time.Now(), []byte(msg))
	}

	// Logs ship for the whole step on a context that a shutdown signal does
	// not cancel; it is bounded by delivery_timeout once the step has ended.
	shipCtx, stopShip := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopShip(nil)
	type shipped struct {
		stats logstream.Stats
		err   error
	}
	shipDone := make(chan shipped, 1)
	go func() {
		st, err := logstream.Ship(shipCtx, sp, logstream.ShipOptions{
			StepName: step.StepName,
			Send: func(ctx context.Context, body []byte) error {
				return w.client.PostLogs(ctx, step.JobID, body)
			},
			Permanent: api.IsPermanent,
			Fatal:     api.IsFatal,
			Logger:    w.log,
		})
		shipDone <- shipped{st, err}
	}()

	res := w.execute(ctx, &stepRun{step: step, workerID: workerID, attempt: attempt, key: key, spool: sp, log: log})
	if err := sp.Close(); err != nil {
		log.Error("the step's log spool could not be written; its lines went to the server from memory", "error", err.Error())
	}
	if res.Lost = sp.Lost(); res.Lost > 0 {
		// Reported as a failure: a step whose log is incomplete must not
		// pass for one that ran cleanly.
		note := fmt.Sprintf("%d log lines were lost: the worker's disk under workspace_dir was full and they did not fit in memory", res.Lost)
		log.Error(note)
		if res.Error != "" {
			res.Error += "\n" + note
		} else {
			res.Error = note
		}
	}
	window := w.deliveryWindow()
	timer := time.AfterFunc(window, func() {
		stopShip(fmt.Errorf("the delivery window of %s (delivery_timeout_secs, or what the deadline left) ran out", window.Round(time.Millisecond)))
	})
	defer timer.Stop()
	sh := <-shipDone
	res.Lines, res.Bytes, res.Dropped = sh.stats.Lines, sh.stats.Bytes, sh.stats.Dropped
	if sh.err != nil {
		log.Error("step logs not fully delivered; they stay in the spool", "error", sh.err.Error())
	}
	return w.finish(shipCtx, sp, res, sh.err, log)
}

// reportWithoutSpool reports a step failed when even its spool cannot be
// made (disk full, permissions): the step must not stay running.
func (w *worker) reportWithoutSpool(ctx context.Context, step *api.Step, cause error, log *slog.Logger) (stepResult, error) {
	res := stepResult{ExitCode: -1, Error: "Failed to prepare step: " + cause.Error()}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.DeliveryTimeout())
	defer cancel()
	if err := w.client.WithRetry(completeRetry).Complete(dctx, step.JobID, step.StepName, res.completion()); err != nil {
		return res, fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	res.Delivered = true
	log.Error("step failed before it could run", "error", cause.Error())
	return res, nil
}

// completeRetry retries a completion through a restarting server.
var completeRetry = api.Retry{Initial: 500 * time.Millisecond, Max: 15 * time.Second}

// finish saves the completion in the spool, sends it, and removes the
// spool once everything is delivered.
func (w *worker) finish(ctx context.Context, sp *logstream.Spool, res stepResult, logErr error, log *slog.Logger) (stepResult, error) {
	body, err := json.Marshal(res.completion())
	if err != nil {
		return res, fmt.Errorf("encoding completion: %w", err)
	}
	if err := sp.SaveCompletion(body); err != nil {
		log.Error("saving completion to spool", "error", err.Error())
	}
	if err := w.deliverer.Complete(ctx, sp, body); err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (last error: %w)", cause, err)
		}
		log.Error("step result not delivered; it stays in the spool for the next run", "error", err.Error())
		return res, fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	res.Delivered = true
	// Told before the spool goes, so a supervisor never reports a step
	// whose result is already delivered.
	w.events.Emit(handoff.Event{Kind: handoff.Delivered})
	log.Info("step reported", "exit_code", res.ExitCode, "failed", res.ExitCode != 0 || res.Error != "")
	if logErr != nil {
		if err := delivery.MarkCompletionSent(sp.Dir()); err != nil {
			log.Error("marking the completion delivered", "error", err.Error())
		}
		return res, fmt.Errorf("%w: logs: %w", ErrNotDelivered, logErr)
	}
	if err := sp.Remove(); err != nil {
		log.Warn("removing delivered spool", "error", err.Error())
	}
	return res, nil
}

// deliveryWindow is how long logs and the result may take once the step
// has ended: delivery_timeout_secs, cut to what is left before DeliverBy
// (a pod or a Lambda invocation that ends then takes the spool with it).
func (w *worker) deliveryWindow() time.Duration {
	d := w.cfg.DeliveryTimeout()
	if !w.deliverBy.IsZero() {
		d = min(d, max(time.Until(w.deliverBy), 0))
	}
	return d
}
