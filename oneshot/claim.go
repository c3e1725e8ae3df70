package oneshot

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
)

// claim asks for a step, polling every poll interval until wait is over.
// It returns the (possibly re-registered) worker id.
func (r *runner) claim(ctx context.Context, id string, wait time.Duration, log *slog.Logger) (*api.Step, string, error) {
	until := time.Now().Add(wait)
	reregistered := false
	tick := time.NewTicker(r.cfg.PollInterval())
	defer tick.Stop()
	for {
		// Not cut by a stop signal or the deadline: the server may commit
		// the claim before answering, and a step whose answer we dropped
		// would stay running under our id. Each try is bounded by the
		// request timeout; the stop is honoured between polls.
		step, err := r.client.Claim(context.WithoutCancel(ctx), api.ClaimRequest{
			WorkerID:     id,
			Capabilities: r.cfg.Capabilities,
			Tags:         r.cfg.Tags,
			Exclusive:    r.cfg.Exclusive,
		})
		var se *api.StatusError
		switch {
		case step != nil:
			if err != nil {
				// A step that came without required fields is still ours:
				// runStep reports it failed instead of stranding it.
				log.Warn("claimed a malformed step", "error", err.Error())
			}
			log.Info("claimed step", "job_id", step.JobID, "step", step.StepName)
			return step, id, nil
		case err == nil || ctx.Err() != nil:
			// No work (or stopping: a failure after the stop is not news).
		case errors.Is(err, api.ErrClaimRejected):
			log.Warn("the server failed the step it picked; polling on", "error", err.Error())
		case errors.As(err, &se) && se.Status == http.StatusInternalServerError && !reregistered:
			// The worker row may be gone (retention): the server answers
			// heartbeats with 200 but claims with 500 (contract §8).
			log.Warn("claim answered 500; registering again in case the worker row was removed")
			reregistered = true
			nid, rerr := r.register(ctx)
			if rerr != nil {
				return nil, id, rerr
			}
			id = nid
			continue
		case errors.Is(err, api.ErrUnauthorized), !api.IsTransient(err):
			return nil, id, err
		default:
			if !time.Now().Before(until) {
				return nil, id, err
			}
			log.Warn("claim failed; polling on", "error", err.Error())
		}
		if !time.Now().Before(until) {
			return nil, id, nil
		}
		select {
		case <-ctx.Done():
			return nil, id, nil
		case <-tick.C:
		}
	}
}
