package fakeserver

import (
	"fmt"
	"slices"
)

// Sweep runs the recovery sweeper once at Options.Now (§8), applying
// rule 1 (workers silent for longer than HeartbeatTimeout become inactive
// and their running steps fail, or are re-queued when StepSpec.Retries
// leaves attempts) and rule 4 (ready steps older than
// UnmatchedStepTimeout with no active worker whose registered
// capabilities and tags match fail). Step and job timeouts (rules 2, 3)
// are not simulated. The server runs this every sweep_interval_secs; the
// fake only when asked, so tests control time.
func (s *Server) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	dead := map[string]bool{}
	for _, id := range s.workerList {
		wk := s.workers[id]
		if wk != nil && wk.state.Status == WorkerActive && wk.state.LastHeartbeat.Before(now.Add(-s.hbTTL)) {
			wk.state.Status = WorkerInactive
			dead[id] = true
		}
	}
	for _, st := range s.queue {
		switch {
		case st.state.Status == StatusRunning && dead[st.state.WorkerID]:
			w := st.state.WorkerID
			s.markFailedLocked(st, fmt.Sprintf("Worker heartbeat timeout (worker %s unresponsive)", w))
			s.serverLogLocked(st.job.id, fmt.Sprintf("[recovery] Worker %s unresponsive (heartbeat timeout), failing step '%s'", w, st.spec.StepName))
			s.orchestrateLocked(st)
		case st.state.Status == StatusReady && claimable(st.spec.ActionType) &&
			st.ready.Before(now.Add(-s.unmTTL)) && !s.anyActiveWorkerMatchesLocked(st):
			s.markFailedLocked(st, "No active worker with required capability/tags to run this step")
			s.settleJobLocked(st.job)
		}
	}
	s.bumpLocked()
}

func (s *Server) markFailedLocked(st *step, msg string) {
	st.state.Status = StatusFailed
	st.state.Error = msg
	st.state.CompletedAt = s.now()
}

// anyActiveWorkerMatchesLocked uses the registered capabilities, tags
// and exclusive flag, unlike claim (§8 rule 4).
func (s *Server) anyActiveWorkerMatchesLocked(st *step) bool {
	for _, wk := range s.workers {
		if wk.state.Status != WorkerActive {
			continue
		}
		if st.ability == "" || !slices.Contains(wk.state.Capabilities, st.ability) {
			continue
		}
		ok := true
		for _, t := range st.spec.RequiredTags {
			ok = ok && slices.Contains(wk.state.Tags, t)
		}
		if wk.state.Exclusive {
			for _, t := range wk.state.Tags {
				ok = ok && slices.Contains(st.spec.RequiredTags, t)
			}
		}
		if ok {
			return true
		}
	}
	return false
}
