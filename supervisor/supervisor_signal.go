package supervisor

import (
	"context"
	"syscall"
	"time"
)

// stop runs after claiming stopped. With on_signal "drain" (the default)
// running steps may finish until drain_timeout; a second signal, or the
// deadline, cancels them: each child gets SIGTERM, stops its step
// (cancel_signal, cancel_grace, SIGKILL) and reports it failed ("Worker
// shutting down"). Children that still do not exit are killed and their
// steps reported from their spools.
func (s *supervisor) stop() {
	if s.running() == 0 {
		s.childWG.Wait()
		return
	}
	allDone := make(chan struct{})
	go func() { s.childWG.Wait(); close(allDone) }()
	if s.cfg.OnSignal != "cancel" {
		s.log.Info("draining: waiting for running steps", "running", s.running(), "drain_timeout", s.cfg.DrainTimeout())
		deadline := time.NewTimer(s.cfg.DrainTimeout())
		defer deadline.Stop()
		select {
		case <-allDone:
			s.log.Info("drained")
			return
		case <-deadline.C:
			s.log.Warn("drain timeout reached; cancelling running steps")
		case <-s.second:
			s.log.Warn("second signal; cancelling running steps")
		}
	}
	s.signalChildren(syscall.SIGTERM)
	// One more signal kills children still cancelling: the second with
	// on_signal cancel, the third after a drain.
	kill := s.third
	if s.cfg.OnSignal == "cancel" {
		kill = s.second
	}
	// A child needs cancel_grace to stop its step, then time to deliver.
	hard := time.NewTimer(s.cfg.CancelGrace() + s.cfg.DeliveryTimeout())
	defer hard.Stop()
	select {
	case <-allDone:
		return
	case <-hard.C:
	case <-kill:
	}
	s.log.Error("worker processes did not stop in time; killing them")
	s.signalChildren(syscall.SIGKILL)
	<-allDone
}

// watchSignals closes s.second on the second stop signal and s.third on
// the third; the first one also ended the ctx given to Run.
func (s *supervisor) watchSignals(ctx context.Context) {
	seen := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.deps.Signals:
			seen++
			switch seen {
			case 2:
				close(s.second)
			case 3:
				close(s.third)
				return
			}
		}
	}
}

func (s *supervisor) running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.children)
}

func (s *supervisor) signalChildren(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.children {
		if c.cmd != nil && c.cmd.Process != nil {
			_ = c.cmd.Process.Signal(sig)
		}
	}
}
