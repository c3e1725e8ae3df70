package oneshot

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/claim"
)

// claim asks for a step, polling at the claim pace (claim.Pace: every poll
// interval, or backing off when configured) until wait is over, by the one
// claim policy (package claim). It returns the worker id the step was
// claimed with: a new registration replaces id, and current (what
// heartbeats go to) follows it.
func (w *worker) claim(ctx context.Context, id string, wait time.Duration, current *atomic.Pointer[string], log *slog.Logger) (*api.Step, string, error) {
	until := time.Now().Add(wait)
	reregistered := false
	pace := claim.NewPace(w.cfg)
	for {
		// Not cut by a stop signal or the deadline: the server may commit
		// the claim before answering, and a step whose answer we dropped
		// would stay running under our id. The request timeout bounds it;
		// the stop is honoured between polls.
		step, err := claim.Once(context.WithoutCancel(ctx), w.client, w.cfg, id)
		more := time.Now().Before(until)
		switch v := claim.Judge(step, err); {
		case v == claim.Work:
			if err != nil {
				log.Warn("claimed a malformed step; it is reported failed", "error", err.Error())
			}
			log.Info("claimed step", "job_id", step.JobID, "step", step.StepName)
			return step, id, nil
		case ctx.Err() != nil:
			// Stopping: a failure after the stop is not news.
			if v == claim.Abandon {
				w.abandon(ctx, id, false, current, log)
			}
			return nil, id, nil
		case v == claim.Idle && err != nil:
			log.Warn("the server failed the step it picked; polling on", "error", err.Error())
		case v == claim.Reregister && !reregistered:
			log.Warn("claim answered 500; registering again in case the worker row was removed")
			reregistered = true
			nid, rerr := w.register(ctx)
			if rerr != nil {
				return nil, id, rerr
			}
			id = nid
			current.Store(&nid)
			continue
		case v == claim.Abandon:
			// The claim may be committed under id: no more heartbeats or
			// claims for it, so the server's heartbeat timeout fails (and,
			// with retry:, re-queues) the step we never heard of.
			nid, rerr := w.abandon(ctx, id, more, current, log)
			if !more || rerr != nil {
				return nil, nid, err
			}
			id = nid
		case v == claim.Fatal, v == claim.Reregister, (v == claim.Retry && !more):
			return nil, id, err
		case v == claim.Retry:
			log.Warn("claim failed; polling on", "error", err.Error())
		}
		if !more {
			return nil, id, nil
		}
		// The last poll comes when wait is over, not a back-off later.
		pause := time.NewTimer(min(pace.Idle(), max(time.Until(until), 0)))
		select {
		case <-ctx.Done():
			pause.Stop()
			return nil, id, nil
		case <-pause.C:
		}
	}
}

// abandon gives up worker id after a claim whose answer was lost. When
// claiming goes on, a fresh id is registered (and persisted); otherwise
// the persisted id is only forgotten, so the next run registers anew.
func (w *worker) abandon(ctx context.Context, id string, goOn bool, current *atomic.Pointer[string], log *slog.Logger) (string, error) {
	log.Warn("a claim got no answer and may have been committed; abandoning this worker id so the server's heartbeat timeout fails the step", "worker_id", id)
	if !goOn {
		w.forgetID(id)
		empty := ""
		current.Store(&empty)
		return "", nil
	}
	nid, err := w.register(ctx)
	if err != nil {
		w.forgetID(id)
		empty := ""
		current.Store(&empty)
		return "", err
	}
	current.Store(&nid)
	return nid, nil
}
