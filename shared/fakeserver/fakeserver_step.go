package fakeserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// handleStart is POST /worker/jobs/{id}/steps/{step}/start (§1.6):
// unconditional (it resurrects a finished step), then job pending ->
// running. An unknown step is a 200 that changes nothing.
func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) {
	jobID, ok := pathUUID(w, r, "id")
	if !ok {
		return
	}
	var req workerIDRequest
	if !decodeJSON(w, r, workerIDFields, &req) {
		return
	}
	wid, ok := workerUUID(w, req.WorkerID)
	if !ok {
		return
	}
	// Replies are written after unlocking: the request recorder locks too.
	if !s.start(jobID, r.PathValue("step"), wid) {
		writeInternal(w)
		return
	}
	writeJSON(w, http.StatusOK, statusOK)
}

// start applies a start; false means the worker row is missing (FK).
func (s *Server) start(jobID, name, wid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.findStepLocked(jobID, name)
	if st == nil {
		return true
	}
	if s.workers[wid] == nil {
		s.log.Error("start: worker row does not exist", "worker_id", wid)
		return false
	}
	now := s.now()
	st.state.Status = StatusRunning
	st.state.WorkerID = wid
	st.state.StartedAt = now
	st.state.Starts++
	st.attempt().Starts++
	st.attempt().WorkerID = wid
	if st.job.status == JobPending {
		st.job.status = JobRunning
		st.job.started = now
	}
	s.bumpLocked()
	return true
}

type completeRequest struct {
	ExitCode *int32          `json:"exit_code"`
	Output   json.RawMessage `json:"output"`
	Error    *string         `json:"error"`
}

var completeFields = []field{
	{name: "exit_code", kind: kInt32, nullable: true},
	{name: "output", kind: kAny},
	{name: "error", kind: kString, nullable: true},
}

// handleComplete is POST /worker/jobs/{id}/steps/{step}/complete (§1.7):
// failed when exit_code (or 0) != 0 or error is not null; unconditional,
// last writer wins; an unknown job is a 200.
func (s *Server) handleComplete(w http.ResponseWriter, r *http.Request) {
	jobID, ok := pathUUID(w, r, "id")
	if !ok {
		return
	}
	var req completeRequest
	if !decodeJSON(w, r, completeFields, &req) {
		return
	}
	s.complete(jobID, r.PathValue("step"), req)
	writeJSON(w, http.StatusOK, statusOK)
}

func (s *Server) complete(jobID, name string, req completeRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.findStepLocked(jobID, name); st != nil {
		code := 0
		if req.ExitCode != nil {
			code = int(*req.ExitCode)
			st.state.ExitCode = &code
		} else {
			st.state.ExitCode = nil
		}
		st.state.Completes++
		st.attempt().Completes++
		st.attempt().Results = append(st.attempt().Results, resultKey(req))
		st.state.CompletedAt = s.now()
		if code != 0 || req.Error != nil {
			st.state.Status = StatusFailed
			st.state.Output = nil
			if req.Error != nil {
				st.state.Error = *req.Error
			} else {
				st.state.Error = fmt.Sprintf("Process exited with code %d", code)
			}
		} else {
			st.state.Status = StatusCompleted
			st.state.Error = ""
			st.state.Output = compact(req.Output)
			if string(st.state.Output) == "null" {
				st.state.Output = nil
			}
		}
		s.orchestrateLocked(st)
		s.bumpLocked()
	}
}

type logsRequest struct {
	StepName *string `json:"step_name"`
	Lines    []struct {
		TS     string `json:"ts"`
		Stream string `json:"stream"`
		Line   string `json:"line"`
	} `json:"lines"`
}

// logsProbe decodes a logs body in one pass with pointers, so that a
// missing or null required field (both 422 on the real server) shows as
// nil without the generic decoder's extra passes: log batches are the
// bulk of a worker's traffic and benchmarks push gigabytes through here.
type logsProbe struct {
	StepName *string `json:"step_name"`
	Lines    *[]struct {
		TS     *string `json:"ts"`
		Stream *string `json:"stream"`
		Line   *string `json:"line"`
	} `json:"lines"`
}

// decodeLogs is decodeJSON for the logs endpoint, with the same answers:
// 415, 413, 400 for syntax, 422 for shape.
func decodeLogs(w http.ResponseWriter, r *http.Request, dst *logsRequest) bool {
	body, ok := readJSONBody(w, r)
	if !ok {
		return false
	}
	var p logsProbe
	if err := json.Unmarshal(body, &p); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			writePlain(w, http.StatusBadRequest, "Failed to parse the request body as JSON: syntax error")
		} else {
			writePlain(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: "+err.Error())
		}
		return false
	}
	if p.Lines == nil {
		writePlain(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: missing field `lines`")
		return false
	}
	dst.StepName = p.StepName
	dst.Lines = make([]struct {
		TS     string `json:"ts"`
		Stream string `json:"stream"`
		Line   string `json:"line"`
	}, len(*p.Lines))
	for i, l := range *p.Lines {
		if l.TS == nil || l.Stream == nil || l.Line == nil {
			writePlain(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: lines: missing field `ts`, `stream` or `line`")
			return false
		}
		dst.Lines[i].TS, dst.Lines[i].Stream, dst.Lines[i].Line = *l.TS, *l.Stream, *l.Line
	}
	return true
}

// handleLogs is POST /worker/jobs/{id}/logs (§1.8): one record per line,
// in order; values are not validated; an unknown job still gets them.
func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	jobID, ok := pathUUID(w, r, "id")
	if !ok {
		return
	}
	var req logsRequest
	if !decodeLogs(w, r, &req) {
		return
	}
	stepName := ""
	if req.StepName != nil {
		stepName = *req.StepName
	}
	recs := make([]LogRecord, len(req.Lines))
	for i, l := range req.Lines {
		recs[i] = LogRecord{TS: l.TS, Stream: l.Stream, Step: stepName, Line: l.Line}
	}
	s.mu.Lock()
	s.storeBatchLocked(jobID, stepName, recs)
	s.bumpLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, statusOK)
}

// handleCancelled is GET /worker/jobs/{id}/cancelled (§1.9): it reads the
// in-memory set only, never the job row.
func (s *Server) handleCancelled(w http.ResponseWriter, r *http.Request) {
	jobID, ok := pathUUID(w, r, "id")
	if !ok {
		return
	}
	s.mu.Lock()
	c := s.cancelSet[jobID]
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]bool{"cancelled": c})
}

// resultKey is a completion as AttemptState.Results keeps it.
func resultKey(req completeRequest) string {
	code, msg := "null", "null"
	if req.ExitCode != nil {
		code = fmt.Sprint(*req.ExitCode)
	}
	if req.Error != nil {
		msg = *req.Error
	}
	return code + "|" + msg + "|" + string(req.Output)
}
