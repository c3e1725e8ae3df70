package fakeserver

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// The /dev/* endpoints are not part of Strøm: they let a person run the
// fake on its own (stroem-worker dev-server) and drive it with curl. They
// use the same bearer token as the worker API.

type devStep struct {
	StepName    string          `json:"step_name"`
	ActionName  string          `json:"action_name"`
	ActionType  string          `json:"action_type"`
	Runner      string          `json:"runner"`
	Status      string          `json:"status"`
	WorkerID    string          `json:"worker_id,omitempty"`
	ExitCode    *int            `json:"exit_code"`
	Output      json.RawMessage `json:"output"`
	Error       string          `json:"error,omitempty"`
	Attempt     int             `json:"attempt"`
	Claims      int             `json:"claims"`
	Starts      int             `json:"starts"`
	Completes   int             `json:"completes"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	CompletedAt *time.Time      `json:"completed_at,omitempty"`
}

type devJob struct {
	JobID      string      `json:"job_id"`
	TaskName   string      `json:"task_name"`
	Workspace  string      `json:"workspace"`
	Status     string      `json:"status"`
	Cancelled  bool        `json:"cancelled"`
	CreatedAt  time.Time   `json:"created_at"`
	StartedAt  *time.Time  `json:"started_at,omitempty"`
	FinishedAt *time.Time  `json:"finished_at,omitempty"`
	Steps      []devStep   `json:"steps,omitempty"`
	Logs       []LogRecord `json:"logs,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Server) devJobLocked(j *job, full bool) devJob {
	d := devJob{JobID: j.id, TaskName: j.taskName, Workspace: j.workspace, Status: j.status,
		Cancelled: s.cancelSet[j.id], CreatedAt: j.created, StartedAt: timePtr(j.started), FinishedAt: timePtr(j.finished)}
	if !full {
		return d
	}
	for _, st := range j.steps {
		c := st.state.clone()
		d.Steps = append(d.Steps, devStep{StepName: st.spec.StepName, ActionName: st.spec.ActionName,
			ActionType: st.spec.ActionType, Runner: st.spec.Runner, Status: c.Status, WorkerID: c.WorkerID,
			ExitCode: c.ExitCode, Output: c.Output, Error: c.Error, Attempt: c.Attempt, Claims: c.Claims, Starts: c.Starts,
			Completes: c.Completes, StartedAt: timePtr(c.StartedAt), CompletedAt: timePtr(c.CompletedAt)})
	}
	d.Logs = append([]LogRecord{}, s.logs[j.id]...)
	return d
}

// handleDevAddJob is POST /dev/jobs: body a JobSpec, reply 201 {"job_id"}.
func (s *Server) handleDevAddJob(w http.ResponseWriter, r *http.Request) {
	var spec JobSpec
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeError(w, http.StatusBadRequest, "decoding job spec: "+err.Error())
		return
	}
	id, err := s.addJob(spec)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"job_id": id})
}

// handleDevListJobs is GET /dev/jobs: every job, without steps and logs.
func (s *Server) handleDevListJobs(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := make([]devJob, 0, len(s.jobOrder))
	for _, j := range s.jobOrder {
		out = append(out, s.devJobLocked(j, false))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// handleDevGetJob is GET /dev/jobs/{id}: the job, its steps and its logs.
func (s *Server) handleDevGetJob(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	j := s.jobs[canonicalID(r.PathValue("id"))]
	if j == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "Job not found")
		return
	}
	d := s.devJobLocked(j, true)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, d)
}

// handleDevCancel is POST /dev/jobs/{id}/cancel: CancelJob.
func (s *Server) handleDevCancel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	j := s.jobs[canonicalID(r.PathValue("id"))]
	if j != nil {
		s.cancelJobLocked(j)
	}
	s.mu.Unlock()
	if j == nil {
		writeError(w, http.StatusNotFound, "Job not found")
		return
	}
	writeJSON(w, http.StatusOK, statusOK)
}

// handleDevAddWorkspace is POST /dev/workspaces/{ws}[?revision=R] with a
// tar.gz body: AddWorkspace; reply 201 {"revision"}. The body is limited
// like every request (2 MiB).
func (s *Server) handleDevAddWorkspace(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if len(body) > maxJSONBody {
		writeError(w, http.StatusRequestEntityTooLarge, "tarball larger than 2 MiB")
		return
	}
	if len(body) < 2 || !bytes.Equal(body[:2], []byte{0x1f, 0x8b}) {
		writeError(w, http.StatusBadRequest, "body is not gzip data")
		return
	}
	rev := s.AddWorkspace(r.PathValue("ws"), r.URL.Query().Get("revision"), body)
	writeJSON(w, http.StatusCreated, map[string]string{"revision": rev})
}

// handleDevSweep is POST /dev/sweep: Sweep.
func (s *Server) handleDevSweep(w http.ResponseWriter, r *http.Request) {
	s.Sweep()
	writeJSON(w, http.StatusOK, statusOK)
}
