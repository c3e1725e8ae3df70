package fakeserver

import (
	"bytes"
	"net/http"

	"github.com/google/uuid"
)

// Snapshot is a stored task or workspace state snapshot (§1.10, §4).
type Snapshot struct {
	ID      string
	HasJSON bool
	Tarball []byte
}

type stateKey struct{ ws, task string } // task "" = global state

// State returns the latest snapshot of task in workspace ws; task ""
// means the workspace's global state.
func (s *Server) State(ws, task string) (Snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, ok := s.states[stateKey{ws, task}]
	snap.Tarball = bytes.Clone(snap.Tarball)
	return snap, ok
}

// PutState stores a snapshot as if a step had uploaded it (task "" =
// global); claims of that task then carry state_storage_key. An empty
// ID is generated. It returns the ID.
func (s *Server) PutState(ws, task string, snap Snapshot) string {
	if snap.ID == "" {
		snap.ID = uuid.NewString()
	}
	snap.Tarball = bytes.Clone(snap.Tarball)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[stateKey{ws, task}] = snap
	s.bumpLocked()
	return snap.ID
}

// stateKeysLocked fills the claim's snapshot fields (§2.1): present only
// when a snapshot exists.
func (s *Server) stateKeysLocked(reply *claimReply, ws, task string) {
	if snap, ok := s.states[stateKey{ws, task}]; ok {
		k, hj := "state/"+ws+"/"+task+"/"+snap.ID, snap.HasJSON
		reply.StateStorageKey, reply.StateHasJSON = &k, &hj
	}
	if snap, ok := s.states[stateKey{ws, ""}]; ok {
		k, hj := "global-state/"+ws+"/"+snap.ID, snap.HasJSON
		reply.GlobalStateStorageKey, reply.GlobalStateHasJSON = &k, &hj
	}
}

// handleGetState is GET /worker/state/{ws}/{task} and
// GET /worker/global-state/{ws}: 200 gzip with x-snapshot-id, 204 none.
func (s *Server) handleGetState(w http.ResponseWriter, r *http.Request) {
	snap, ok := s.State(r.PathValue("ws"), r.PathValue("task"))
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("X-Snapshot-Id", snap.ID)
	w.WriteHeader(http.StatusOK)
	w.Write(snap.Tarball)
}

// handlePutState is POST /worker/state/{ws}/{task}/{job_id}?has_json=bool
// and POST /worker/global-state/{ws}/{job_id}: body a tar.gz, 201
// {"snapshot_id"}; 404 unknown job, 400 job of another workspace.
func (s *Server) handlePutState(w http.ResponseWriter, r *http.Request) {
	jobID, ok := pathUUID(w, r, "job_id")
	if !ok {
		return
	}
	body, _ := readBody(r)
	if len(body) > maxStateBytes {
		writePlain(w, http.StatusRequestEntityTooLarge, "Failed to buffer the request body: length limit exceeded")
		return
	}
	ws := r.PathValue("ws")
	s.mu.Lock()
	j := s.jobs[jobID]
	s.mu.Unlock()
	switch {
	case j == nil:
		writeError(w, http.StatusNotFound, "Job not found")
		return
	case j.workspace != ws:
		writeError(w, http.StatusBadRequest, "Job does not belong to workspace '"+ws+"'")
		return
	}
	id := s.PutState(ws, r.PathValue("task"), Snapshot{HasJSON: r.URL.Query().Get("has_json") == "true", Tarball: body})
	writeJSON(w, http.StatusCreated, map[string]string{"snapshot_id": id})
}
