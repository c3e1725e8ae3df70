package supervisor

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
)

// claimLoop claims while a slot is free until ctx ends (the first stop
// signal). Idle, it claims once per poll interval; after a claim that
// brought a step it claims again at once, so pickup latency stays within
// one poll interval without the reference worker's growing idle back-off.
func (s *supervisor) claimLoop(ctx context.Context) error {
	slots := make(chan struct{}, s.cfg.MaxConcurrent)
	tick := time.NewTicker(s.cfg.PollInterval())
	defer tick.Stop()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		step, err := s.claim(ctx)
		if err != nil {
			<-slots
			if errors.Is(err, api.ErrUnauthorized) {
				return err
			}
		}
		if step != nil {
			s.startChild(step, func() { <-slots })
			continue
		}
		if err == nil {
			<-slots
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// reregisterAfter spaces registrations caused by claim 500s, so a server
// that fails for another reason does not get a new worker row per poll.
const reregisterAfter = 5 * time.Second

// claim asks for one step. A 500 is taken as the worker row having been
// removed (contract §8: heartbeats still answer 200 then): register again.
func (s *supervisor) claim(ctx context.Context) (*api.Step, error) {
	// Not cut by the stop signal: a claim the server committed but whose
	// answer we dropped would leave a step running under our id.
	step, err := s.client.WithRetry(api.Retry{Attempts: 1}).Claim(context.WithoutCancel(ctx), api.ClaimRequest{
		WorkerID:     s.id(),
		Capabilities: s.cfg.Capabilities,
		Tags:         s.cfg.Tags,
		Exclusive:    s.cfg.Exclusive,
	})
	var se *api.StatusError
	switch {
	case step != nil:
		s.contact()
		s.metrics.claims.WithLabelValues("step").Inc()
		if err != nil {
			s.log.Warn("claimed a malformed step; its child reports it failed", "error", err.Error())
		}
		return step, nil
	case err == nil:
		s.contact()
		s.metrics.claims.WithLabelValues("empty").Inc()
		return nil, nil
	case errors.Is(err, api.ErrClaimRejected):
		s.contact()
		s.metrics.claims.WithLabelValues("rejected").Inc()
		s.log.Warn("the server failed the step it picked; polling on", "error", err.Error())
		return nil, nil
	case errors.As(err, &se) && se.Status == http.StatusInternalServerError && time.Since(s.registeredAt) > reregisterAfter:
		s.metrics.claims.WithLabelValues("error").Inc()
		s.log.Warn("claim answered 500; registering again in case the worker row was removed", "error", err.Error())
		if rerr := s.registerUntil(ctx); rerr != nil {
			return nil, rerr
		}
		return nil, err
	case errors.Is(err, api.ErrUnauthorized):
		s.metrics.claims.WithLabelValues("error").Inc()
		return nil, err
	default:
		s.metrics.claims.WithLabelValues("error").Inc()
		if ctx.Err() == nil {
			s.log.Warn("claim failed", "error", err.Error())
		}
		return nil, err
	}
}
