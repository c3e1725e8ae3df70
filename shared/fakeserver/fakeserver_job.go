package fakeserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// DefaultWorkspace is the workspace of a job that names none.
const DefaultWorkspace = "default"

// Step statuses (the job_step.status values a worker can cause).
const (
	StatusReady     = "ready"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Job statuses.
const (
	JobPending   = "pending"
	JobRunning   = "running"
	JobCompleted = "completed"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// JobSpec is a job to enqueue: AddJob, or POST /dev/jobs with the same
// fields in snake_case.
type JobSpec struct {
	// JobID is the job's UUID; empty means a new random one.
	JobID    string `json:"job_id,omitempty"`
	TaskName string `json:"task_name"`
	// Workspace defaults to "default".
	Workspace string     `json:"workspace,omitempty"`
	Steps     []StepSpec `json:"steps"`
}

// StepSpec is one step of a JobSpec; every step is ready at once (the fake
// has no dependencies between steps).
type StepSpec struct {
	StepName string `json:"step_name"`
	// ActionName defaults to StepName.
	ActionName string `json:"action_name,omitempty"`
	// ActionType defaults to action_spec's "type", else "script".
	ActionType string `json:"action_type,omitempty"`
	// Runner defaults to "local" for script actions, "none" otherwise.
	Runner      string `json:"runner,omitempty"`
	ActionImage string `json:"action_image,omitempty"`
	// ActionSpec and Input are sent in the claim as given (null if empty):
	// the fake renders no templates.
	ActionSpec  json.RawMessage `json:"action_spec,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`
	TimeoutSecs int64           `json:"timeout_secs,omitempty"`
	// Revision pins the workspace revision in the claim; empty omits it.
	Revision     string   `json:"revision,omitempty"`
	RequiredTags []string `json:"required_tags,omitempty"`
	// RenderFail makes the claim of this step fail template rendering:
	// 422 and the step failed (§1.5).
	RenderFail bool `json:"render_fail,omitempty"`
	// Retries is the step's retry: config, as the number of attempts
	// after the first: a step failed by a complete or by the recovery
	// sweep's heartbeat rule (§1.7, §8) is made ready again while attempts
	// remain, claimable after RetryDelaySecs (the real server's default
	// retry delay is 30 s; here 0 unless set).
	Retries        int     `json:"retries,omitempty"`
	RetryDelaySecs float64 `json:"retry_delay_secs,omitempty"`
}

// StepState is what the server holds for one step. Its JSON uses the Go
// field names (CLI tests grep it).
type StepState struct {
	Status   string
	WorkerID string
	// ExitCode is the exit_code of the last complete, nil if none was sent.
	ExitCode *int
	// Output is stored only when the step completed successfully (§1.7).
	Output json.RawMessage
	// Error is the step's error_message.
	Error string
	// Claims, Starts and Completes count the calls that touched the step.
	Claims, Starts, Completes int
	StartedAt                 time.Time
	CompletedAt               time.Time
	// Attempt is the step's current attempt, from 1; a retry (Retries,
	// Requeue) starts the next.
	Attempt int
	// Attempts is what happened in each attempt, oldest first; the last
	// is the current one.
	Attempts []AttemptState
}

// AttemptState counts the calls that touched a step during one attempt:
// from the step becoming ready until it is re-queued. The server cannot
// tell which attempt a worker's call was meant for, so a late complete of
// an earlier attempt counts in the attempt during which it arrived.
type AttemptState struct {
	// WorkerID is the worker that last claimed or started the step in
	// this attempt ("" when none did).
	WorkerID                  string
	Claims, Starts, Completes int
	// Results are the completions received during the attempt, each as
	// "exit_code|error|output": a resend after a lost answer repeats one,
	// a stale result of an earlier attempt adds a different one.
	Results []string
	// Status is the step's status when the attempt ended, or now for the
	// current attempt.
	Status string
}

// JobState is what the server holds for one job.
type JobState struct {
	JobID      string
	TaskName   string
	Workspace  string
	Status     string
	Cancelled  bool // in the in-memory cancel set (§1.9)
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	Steps      []string // step names in order
}

// LogRecord is one stored log line (§1.8).
type LogRecord struct {
	TS     string `json:"ts"`
	Stream string `json:"stream"`
	Step   string `json:"step"`
	Line   string `json:"line"`
}

// abilityTokens are the capabilities a worker may register (§1.3).
var abilityTokens = []string{"script", "docker", "kubernetes", "agent"}

// requiredAbility derives a step's required ability (§1.5); "" means the
// step is never claimable.
func requiredAbility(actionType, runner string) string {
	switch actionType {
	case "script":
		switch runner {
		case "", "local":
			return "script"
		case "docker":
			return "docker"
		case "pod":
			return "kubernetes"
		}
	case "docker":
		return "docker"
	case "pod":
		return "kubernetes"
	case "agent":
		return "agent"
	}
	return ""
}

// claimable is the action_type filter of the claim SQL (§1.5).
func claimable(actionType string) bool {
	return !slices.Contains([]string{"task", "agent", "approval", "event_source"}, actionType)
}

// normalize fills defaults and checks the spec.
func (spec JobSpec) normalize() (JobSpec, error) {
	if spec.JobID == "" {
		spec.JobID = uuid.NewString()
	} else {
		id, err := uuid.Parse(spec.JobID)
		if err != nil {
			return spec, fmt.Errorf("job_id %q is not a UUID", spec.JobID)
		}
		spec.JobID = id.String()
	}
	if spec.Workspace == "" {
		spec.Workspace = DefaultWorkspace
	}
	if len(spec.Steps) == 0 {
		return spec, errors.New("a job needs at least one step")
	}
	steps := make([]StepSpec, len(spec.Steps))
	seen := map[string]bool{}
	for i, st := range spec.Steps {
		if st.StepName == "" {
			return spec, fmt.Errorf("step %d has no step_name", i)
		}
		if seen[st.StepName] {
			return spec, fmt.Errorf("step name %q is used twice", st.StepName)
		}
		seen[st.StepName] = true
		if st.ActionName == "" {
			st.ActionName = st.StepName
		}
		if st.ActionType == "" {
			var t struct {
				Type string `json:"type"`
			}
			json.Unmarshal(st.ActionSpec, &t)
			st.ActionType = t.Type
			if st.ActionType == "" {
				st.ActionType = "script"
			}
		}
		if st.Runner == "" {
			st.Runner = "none"
			if st.ActionType == "script" {
				st.Runner = "local"
			}
		}
		if len(st.ActionSpec) > 0 && !json.Valid(st.ActionSpec) {
			return spec, fmt.Errorf("step %q: action_spec is not valid JSON", st.StepName)
		}
		if len(st.Input) > 0 && !json.Valid(st.Input) {
			return spec, fmt.Errorf("step %q: input is not valid JSON", st.StepName)
		}
		st.ActionSpec = compact(st.ActionSpec)
		st.Input = compact(st.Input)
		st.RequiredTags = slices.Clone(st.RequiredTags)
		steps[i] = st
	}
	spec.Steps = steps
	return spec, nil
}

func compact(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	var b bytes.Buffer
	if json.Compact(&b, m) != nil {
		return nil
	}
	return b.Bytes()
}

// AddJob enqueues a job with all its steps ready and returns its id. It
// panics on an invalid spec (no steps, a duplicate or empty step name, a
// JobID that is not a UUID or already used): that is a bug in the test.
func (s *Server) AddJob(spec JobSpec) string {
	id, err := s.addJob(spec)
	if err != nil {
		panic("fakeserver.AddJob: " + err.Error())
	}
	return id
}

func (s *Server) addJob(spec JobSpec) (string, error) {
	spec, err := spec.normalize()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.jobs[spec.JobID]; dup {
		return "", fmt.Errorf("job %s already exists", spec.JobID)
	}
	now := s.now()
	j := &job{id: spec.JobID, taskName: spec.TaskName, workspace: spec.Workspace, status: JobPending, created: now}
	for _, st := range spec.Steps {
		p := &step{job: j, spec: st, ability: requiredAbility(st.ActionType, st.Runner), ready: now,
			state: StepState{Status: StatusReady, Attempt: 1, Attempts: []AttemptState{{}}}}
		j.steps = append(j.steps, p)
		s.queue = append(s.queue, p)
	}
	s.jobs[j.id] = j
	s.jobOrder = append(s.jobOrder, j)
	s.bumpLocked()
	return j.id, nil
}

func canonicalID(id string) string {
	if u, err := uuid.Parse(id); err == nil {
		return u.String()
	}
	return id
}

func (s *Server) findStepLocked(jobID, name string) *step {
	j := s.jobs[canonicalID(jobID)]
	if j == nil {
		return nil
	}
	for _, st := range j.steps {
		if st.spec.StepName == name {
			return st
		}
	}
	return nil
}

// Step returns a copy of the state of step name of job jobID.
func (s *Server) Step(jobID, name string) (StepState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.findStepLocked(jobID, name)
	if st == nil {
		return StepState{}, false
	}
	return st.state.clone(), true
}

func (st StepState) clone() StepState {
	if st.ExitCode != nil {
		c := *st.ExitCode
		st.ExitCode = &c
	}
	st.Output = bytes.Clone(st.Output)
	st.Attempts = slices.Clone(st.Attempts)
	for i := range st.Attempts {
		st.Attempts[i].Results = slices.Clone(st.Attempts[i].Results)
	}
	if n := len(st.Attempts); n > 0 {
		st.Attempts[n-1].Status = st.Status
	}
	return st
}

// attempt is the step's current attempt.
func (st *step) attempt() *AttemptState {
	return &st.state.Attempts[len(st.state.Attempts)-1]
}

// Requeue makes step name of job jobID ready for another attempt, as the
// server's retry: orchestration does (§1.7, §8), whatever its status; a
// finished job that is not cancelled runs again. It reports whether the
// step exists.
func (s *Server) Requeue(jobID, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.findStepLocked(jobID, name)
	if st == nil {
		return false
	}
	s.requeueLocked(st)
	return true
}

func (s *Server) requeueLocked(st *step) {
	st.attempt().Status = st.state.Status
	st.state.Attempts = append(st.state.Attempts, AttemptState{})
	st.state.Attempt++
	st.state.Status = StatusReady
	st.state.WorkerID = ""
	st.ready = s.now()
	st.retryAt = st.ready.Add(time.Duration(st.spec.RetryDelaySecs * float64(time.Second)))
	if j := st.job; j.status == JobCompleted || j.status == JobFailed {
		j.status = JobPending
		if !j.started.IsZero() {
			j.status = JobRunning
		}
		j.finished = time.Time{}
	}
	s.bumpLocked()
}

// orchestrateLocked follows a step's change of status: a failed step with
// attempts left is re-queued, else the job may end.
func (s *Server) orchestrateLocked(st *step) {
	if st.state.Status == StatusFailed && st.state.Attempt <= st.spec.Retries {
		s.requeueLocked(st)
		return
	}
	s.settleJobLocked(st.job)
}

// Job returns a copy of the state of job jobID.
func (s *Server) Job(jobID string) (JobState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[canonicalID(jobID)]
	if j == nil {
		return JobState{}, false
	}
	return s.jobStateLocked(j), true
}

func (s *Server) jobStateLocked(j *job) JobState {
	js := JobState{JobID: j.id, TaskName: j.taskName, Workspace: j.workspace, Status: j.status,
		Cancelled: s.cancelSet[j.id], CreatedAt: j.created, StartedAt: j.started, FinishedAt: j.finished}
	for _, st := range j.steps {
		js.Steps = append(js.Steps, st.spec.StepName)
	}
	return js
}

// Jobs returns every job, in the order they were added.
func (s *Server) Jobs() []JobState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]JobState, 0, len(s.jobOrder))
	for _, j := range s.jobOrder {
		out = append(out, s.jobStateLocked(j))
	}
	return out
}

// Logs returns the log records stored for jobID, in order. Records of an
// unknown job are kept too, as the server still writes the file (§1.8).
func (s *Server) Logs(jobID string) []LogRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.logs[canonicalID(jobID)])
}

// CancelJob cancels a job as POST /api/jobs/{id}/cancel does (§6): the job
// becomes cancelled, its ready steps cancelled, its running steps stay
// running, and only if it had running steps is it put in the cancel set
// that GET /worker/jobs/{id}/cancelled reads (§1.9).
func (s *Server) CancelJob(jobID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[canonicalID(jobID)]
	if j == nil {
		return
	}
	s.cancelJobLocked(j)
}

func (s *Server) cancelJobLocked(j *job) {
	if j.status == JobCompleted || j.status == JobFailed || j.status == JobCancelled {
		return
	}
	j.status = JobCancelled
	j.finished = s.now()
	running := false
	for _, st := range j.steps {
		switch st.state.Status {
		case StatusReady:
			st.state.Status = StatusCancelled
		case StatusRunning:
			running = true
		}
	}
	if running {
		s.cancelSet[j.id] = true
	}
	s.bumpLocked()
}

// ForgetCancels empties the cancel set, as a server restart does (§1.9, §6):
// from then on every job reads cancelled=false.
func (s *Server) ForgetCancels() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.cancelSet)
	s.bumpLocked()
}

// appendLogLocked stores records for a job.
// With Options.OnLog set they go to it instead, in order, so that
// benchmarks can stream gigabytes through without keeping them.
func (s *Server) appendLogLocked(jobID string, recs ...LogRecord) {
	if s.onLog != nil {
		s.onLog(jobID, recs)
		return
	}
	s.logs[jobID] = append(s.logs[jobID], recs...)
}

// serverLogLocked writes a server-generated line (§1.8).
func (s *Server) serverLogLocked(jobID, line string) {
	s.appendLogLocked(jobID, LogRecord{TS: s.now().UTC().Format(time.RFC3339Nano), Stream: "stderr", Step: "_server", Line: line})
}

// settleJobLocked is the fake's whole orchestration: once every step is
// terminal, a job that is not cancelled ends failed if a step failed,
// else completed (§1.7; a cancelled job stays cancelled).
func (s *Server) settleJobLocked(j *job) {
	if j.status == JobCancelled {
		return
	}
	failed := false
	for _, st := range j.steps {
		switch st.state.Status {
		case StatusReady, StatusRunning:
			return
		case StatusFailed:
			failed = true
		}
	}
	j.status = JobCompleted
	if failed {
		j.status = JobFailed
	}
	j.finished = s.now()
}
