package supervisor

import (
	"context"
	"errors"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/claim"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
)

// claimLoop claims while a slot is free until ctx ends (the first stop
// signal). Idle, it claims once per poll interval (spaced up to
// poll_interval_max_secs when set, claim.Pace); after a claim that brought
// a step it claims again at once, so pickup latency stays within one poll
// interval by default, without the reference worker's idle back-off.
func (s *supervisor) claimLoop(ctx context.Context) error {
	slots := make(chan struct{}, s.cfg.MaxConcurrent)
	pace := claim.NewPace(s.cfg)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		// A free slot and the stop signal may be ready together, and select
		// picks at random: no claim may start once the signal came, or its
		// step would be failed "Worker shutting down" instead of staying
		// ready for another worker.
		if ctx.Err() != nil {
			<-slots
			return nil
		}
		step, attempt, err := s.claim(ctx)
		if err != nil {
			<-slots
			if errors.Is(err, api.ErrUnauthorized) {
				return err
			}
		}
		if step != nil {
			s.startChild(step, attempt, func() { <-slots })
			pace.Worked()
			continue
		}
		if err == nil {
			<-slots
		}
		wait := time.NewTimer(pace.Idle())
		select {
		case <-ctx.Done():
			wait.Stop()
			return nil
		case <-wait.C:
		}
	}
}

// reregisterAfter spaces registrations caused by claim 500s, so a server
// that fails for another reason does not get a new worker row per poll.
const reregisterAfter = 5 * time.Second

// claim asks for one step by the claim policy (package claim), and
// supersedes the step's earlier attempts on this host before any pending
// delivery can send one of their results.
func (s *supervisor) claim(ctx context.Context) (*api.Step, string, error) {
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	if a := s.abandon.Swap(nil); a != nil && *a == s.id() {
		s.log.Warn("a step result sent under this worker id got no answer; registering a new worker id so the old one goes silent", "worker_id", *a)
		s.metrics.abandoned.Inc()
		if err := s.registerUntil(ctx); err != nil {
			return nil, "", err
		}
	}
	id := s.id()
	// Not cut by the stop signal: a claim the server committed but whose
	// answer we dropped would leave a step running under our id.
	step, err := claim.Once(context.WithoutCancel(ctx), s.client, s.cfg, id)
	v := claim.Judge(step, err)
	s.metrics.claims.WithLabelValues(claimResult(v, err)).Inc()
	switch v {
	case claim.Work:
		s.contact()
		if err != nil {
			s.log.Warn("claimed a malformed step; its child reports it failed", "error", err.Error())
		}
		attempt := delivery.NewAttempt()
		if _, err := s.deliverer.Supersede(context.WithoutCancel(ctx), step.JobID, step.StepName, attempt); err != nil {
			s.log.Warn("marking earlier attempts of the step", "error", err.Error())
		}
		return step, attempt, nil
	case claim.Idle:
		s.contact()
		if err != nil {
			s.log.Warn("the server failed the step it picked; polling on", "error", err.Error())
		}
		return nil, "", nil
	case claim.Reregister:
		if time.Since(s.registeredAt) <= reregisterAfter {
			break
		}
		s.log.Warn("claim answered 500; registering again in case the worker row was removed", "error", err.Error())
		if rerr := s.registerUntil(ctx); rerr != nil {
			return nil, "", rerr
		}
		return nil, "", err
	case claim.Abandon:
		// The claim may be committed under id. The id keeps its heartbeats
		// only while children claimed with it run (childIDs), so the
		// server's heartbeat timeout fails the step we never heard of.
		s.log.Warn("a claim got no answer and may have been committed; registering a new worker id so the old one goes silent",
			"worker_id", id, "error", err.Error())
		s.metrics.abandoned.Inc()
		if rerr := s.registerUntil(ctx); rerr != nil {
			return nil, "", rerr
		}
		return nil, "", err
	case claim.Fatal:
		return nil, "", err
	}
	if ctx.Err() == nil {
		s.log.Warn("claim failed", "error", err.Error())
	}
	return nil, "", err
}

func claimResult(v claim.Verdict, err error) string {
	switch {
	case v == claim.Work:
		return "step"
	case v == claim.Idle && err == nil:
		return "empty"
	case v == claim.Idle:
		return "rejected"
	}
	return "error"
}
