package fakeserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
)

// noWork is the claim reply when nothing matches: exactly ten keys, all
// null, status 200 (§1.5).
const noWork = `{"workspace":null,"job_id":null,"task_name":null,"step_name":null,"action_name":null,"action_type":null,"action_image":null,"action_spec":null,"input":null,"runner":null}`

type claimRequest struct {
	WorkerID     string   `json:"worker_id"`
	Capabilities []string `json:"capabilities"`
	Tags         []string `json:"tags"`
	Exclusive    bool     `json:"exclusive"`
}

var claimFields = []field{
	{name: "worker_id", kind: kString, required: true},
	{name: "capabilities", kind: kStringList, required: true},
	{name: "tags", kind: kStringList},
	{name: "exclusive", kind: kBool},
}

// claimReply is a claimed step (§2.1). A nil RawMessage marshals as null.
type claimReply struct {
	Workspace   string          `json:"workspace"`
	JobID       string          `json:"job_id"`
	TaskName    string          `json:"task_name"`
	StepName    string          `json:"step_name"`
	ActionName  string          `json:"action_name"`
	ActionType  string          `json:"action_type"`
	ActionImage *string         `json:"action_image"`
	ActionSpec  json.RawMessage `json:"action_spec"`
	Input       json.RawMessage `json:"input"`
	Runner      string          `json:"runner"`
	TimeoutSecs int64           `json:"timeout_secs,omitempty"`
	Revision    string          `json:"revision,omitempty"`

	StateStorageKey       *string `json:"state_storage_key,omitempty"`
	StateHasJSON          *bool   `json:"state_has_json,omitempty"`
	GlobalStateStorageKey *string `json:"global_state_storage_key,omitempty"`
	GlobalStateHasJSON    *bool   `json:"global_state_has_json,omitempty"`
}

// matches is the WHERE clause of the claim SQL (§1.5), given the
// capabilities and tags of the claim (not the registered ones). The job's
// status is not looked at, as on the real server.
func (st *step) matches(caps, tags []string, exclusive bool) bool {
	if st.state.Status != StatusReady || !claimable(st.spec.ActionType) {
		return false
	}
	if st.ability == "" || !slices.Contains(caps, st.ability) {
		return false
	}
	for _, t := range st.spec.RequiredTags {
		if !slices.Contains(tags, t) {
			return false
		}
	}
	if exclusive {
		for _, t := range tags {
			if !slices.Contains(st.spec.RequiredTags, t) {
				return false
			}
		}
	}
	return true
}

// handleClaim is POST /worker/jobs/claim (§1.5). Steps are handed out in
// FIFO order of enqueueing so that tests are deterministic; the real
// server uses ORDER BY random().
func (s *Server) handleClaim(w http.ResponseWriter, r *http.Request) {
	var req claimRequest
	if !decodeJSON(w, r, claimFields, &req) {
		return
	}
	wid, ok := workerUUID(w, req.WorkerID)
	if !ok {
		return
	}
	if len(req.Capabilities) == 0 {
		writeError(w, http.StatusBadRequest, "claim requires at least one capability")
		return
	}
	s.mu.Lock()
	var st *step
	now := s.now()
	for _, c := range s.queue {
		if c.matches(req.Capabilities, req.Tags, req.Exclusive) && !now.Before(c.retryAt) {
			st = c
			break
		}
	}
	if st == nil {
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(noWork))
		return
	}
	if s.workers[wid] == nil {
		// The foreign key job_step.worker_id -> worker fails (§1.5, §8).
		s.mu.Unlock()
		s.log.Error("claim: worker row does not exist", "worker_id", wid)
		writeInternal(w)
		return
	}
	now = s.now()
	st.state.Status = StatusRunning
	st.state.WorkerID = wid
	st.state.StartedAt = now
	st.state.Claims++
	st.attempt().Claims++
	st.attempt().WorkerID = wid
	if st.spec.RenderFail {
		// The server has already failed the step and written a _server
		// line when it answers 422 (§1.5).
		msg := fmt.Sprintf("Failed to render action template for step '%s': injected render failure", st.spec.StepName)
		st.state.Status = StatusFailed
		st.state.Error = msg
		st.state.CompletedAt = now
		s.serverLogLocked(st.job.id, msg)
		s.settleJobLocked(st.job)
		s.bumpLocked()
		s.mu.Unlock()
		writeError(w, http.StatusUnprocessableEntity, msg)
		return
	}
	reply := claimReply{
		Workspace: st.job.workspace, JobID: st.job.id, TaskName: st.job.taskName,
		StepName: st.spec.StepName, ActionName: st.spec.ActionName, ActionType: st.spec.ActionType,
		ActionSpec: st.spec.ActionSpec, Input: st.spec.Input, Runner: st.spec.Runner,
		TimeoutSecs: st.spec.TimeoutSecs, Revision: st.spec.Revision,
	}
	if st.spec.ActionImage != "" {
		img := st.spec.ActionImage
		reply.ActionImage = &img
	}
	s.stateKeysLocked(&reply, st.job.workspace, st.job.taskName)
	s.bumpLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, reply)
}
