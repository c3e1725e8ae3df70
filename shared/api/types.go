package api

import (
	"encoding/json"
	"fmt"
)

// RegisterRequest is the body of POST /worker/register (contract §1.3).
// Tags must marshal as [] rather than null: the server rejects null lists.
type RegisterRequest struct {
	Name         string   `json:"name"`
	Capabilities []string `json:"capabilities"`
	Tags         []string `json:"tags"`
	Exclusive    bool     `json:"exclusive,omitempty"`
	Version      string   `json:"version,omitempty"`
}

// RegisterResponse is the reply to register.
type RegisterResponse struct {
	WorkerID string `json:"worker_id"`
}

// HeartbeatRequest is the body of POST /worker/heartbeat (contract §1.4).
type HeartbeatRequest struct {
	WorkerID string `json:"worker_id"`
}

// ClaimRequest is the body of POST /worker/jobs/claim (contract §1.5).
type ClaimRequest struct {
	WorkerID     string   `json:"worker_id"`
	Capabilities []string `json:"capabilities"`
	Tags         []string `json:"tags"`
	Exclusive    bool     `json:"exclusive,omitempty"`
}

// Step is a claimed step: the server's ClaimResponse (contract §2.1).
// A reply with a null job_id means no work; Claim returns a nil *Step then.
type Step struct {
	Workspace   string          `json:"workspace"`
	JobID       string          `json:"job_id"`
	TaskName    string          `json:"task_name"`
	StepName    string          `json:"step_name"`
	ActionName  string          `json:"action_name"`
	ActionType  string          `json:"action_type"`
	ActionImage string          `json:"action_image,omitempty"`
	ActionSpec  json.RawMessage `json:"action_spec,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`
	Runner      string          `json:"runner"`
	TimeoutSecs int64           `json:"timeout_secs,omitempty"`
	Revision    string          `json:"revision,omitempty"`

	StateStorageKey       string `json:"state_storage_key,omitempty"`
	StateHasJSON          bool   `json:"state_has_json,omitempty"`
	GlobalStateStorageKey string `json:"global_state_storage_key,omitempty"`
	GlobalStateHasJSON    bool   `json:"global_state_has_json,omitempty"`
}

// claimReply mirrors the reply with nullable fields so that the no-work
// shape (ten keys, all null) can be told apart from a step.
type claimReply struct {
	Workspace   *string         `json:"workspace"`
	JobID       *string         `json:"job_id"`
	TaskName    *string         `json:"task_name"`
	StepName    *string         `json:"step_name"`
	ActionName  *string         `json:"action_name"`
	ActionType  *string         `json:"action_type"`
	ActionImage *string         `json:"action_image"`
	ActionSpec  json.RawMessage `json:"action_spec"`
	Input       json.RawMessage `json:"input"`
	Runner      *string         `json:"runner"`
	TimeoutSecs *int64          `json:"timeout_secs"`
	Revision    *string         `json:"revision"`

	StateStorageKey       *string `json:"state_storage_key"`
	StateHasJSON          *bool   `json:"state_has_json"`
	GlobalStateStorageKey *string `json:"global_state_storage_key"`
	GlobalStateHasJSON    *bool   `json:"global_state_has_json"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// toStep converts a decoded reply; nil means no work. A step missing one of
// the fields every step has is still returned (so the caller can report it
// failed instead of stranding it in running), with Malformed describing it.
func (r claimReply) toStep() (*Step, error) {
	if r.JobID == nil || *r.JobID == "" {
		return nil, nil
	}
	s := &Step{
		Workspace:             str(r.Workspace),
		JobID:                 *r.JobID,
		TaskName:              str(r.TaskName),
		StepName:              str(r.StepName),
		ActionName:            str(r.ActionName),
		ActionType:            str(r.ActionType),
		ActionImage:           str(r.ActionImage),
		ActionSpec:            nullToNil(r.ActionSpec),
		Input:                 nullToNil(r.Input),
		Runner:                str(r.Runner),
		Revision:              str(r.Revision),
		StateStorageKey:       str(r.StateStorageKey),
		GlobalStateStorageKey: str(r.GlobalStateStorageKey),
	}
	if r.TimeoutSecs != nil {
		s.TimeoutSecs = *r.TimeoutSecs
	}
	if r.StateHasJSON != nil {
		s.StateHasJSON = *r.StateHasJSON
	}
	if r.GlobalStateHasJSON != nil {
		s.GlobalStateHasJSON = *r.GlobalStateHasJSON
	}
	if s.StepName == "" {
		return s, fmt.Errorf("claimed step of job %s has no step_name", s.JobID)
	}
	return s, nil
}

func nullToNil(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	return m
}

// StartRequest is the body of POST .../steps/{step}/start (contract §1.6).
// The body is required: the MVP worker sent none and steps got stuck.
type StartRequest struct {
	WorkerID string `json:"worker_id"`
}

// CompleteRequest is the body of POST .../steps/{step}/complete
// (contract §1.7, §5). ExitCode is always sent; Output and Error are sent
// as explicit null when absent. The server fails the step when
// exit_code != 0 or error != null.
type CompleteRequest struct {
	ExitCode int             `json:"exit_code"`
	Output   json.RawMessage `json:"output"`
	Error    *string         `json:"error"`
}

// MarshalJSON writes output as null when it is empty.
func (c CompleteRequest) MarshalJSON() ([]byte, error) {
	out := c.Output
	if len(out) == 0 {
		out = json.RawMessage("null")
	}
	return json.Marshal(struct {
		ExitCode int             `json:"exit_code"`
		Output   json.RawMessage `json:"output"`
		Error    *string         `json:"error"`
	}{c.ExitCode, out, c.Error})
}

// LogLine is one line of step output (contract §1.8, §3).
// TS is RFC 3339 UTC with nanoseconds; Stream is "stdout" or "stderr".
type LogLine struct {
	TS     string `json:"ts"`
	Stream string `json:"stream"`
	Line   string `json:"line"`
}

// LogBatch is the body of POST /worker/jobs/{id}/logs.
type LogBatch struct {
	StepName string    `json:"step_name"`
	Lines    []LogLine `json:"lines"`
}

// CancelledResponse is the reply to GET /worker/jobs/{id}/cancelled (§1.9).
type CancelledResponse struct {
	Cancelled bool `json:"cancelled"`
}

// StatusResponse is the {"status":"ok"} reply of several endpoints.
type StatusResponse struct {
	Status string `json:"status"`
}

// ErrorBody is the JSON error shape {"error": "..."} (contract §1.1).
type ErrorBody struct {
	Error string `json:"error"`
}
