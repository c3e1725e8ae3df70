package fakeserver

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Worker statuses.
const (
	WorkerActive   = "active"
	WorkerInactive = "inactive"
)

// WorkerState is a registered worker row.
type WorkerState struct {
	ID           string
	Name         string
	Capabilities []string
	Tags         []string
	Exclusive    bool
	// Version is nil when register sent none (§13 item 23).
	Version       *string
	Status        string
	RegisteredAt  time.Time
	LastHeartbeat time.Time
	Heartbeats    int
}

func (w WorkerState) clone() WorkerState {
	w.Capabilities = slices.Clone(w.Capabilities)
	w.Tags = slices.Clone(w.Tags)
	if w.Version != nil {
		v := *w.Version
		w.Version = &v
	}
	return w
}

// Workers returns the worker rows, in registration order.
func (s *Server) Workers() []WorkerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []WorkerState
	for _, id := range s.workerList {
		if w := s.workers[id]; w != nil {
			out = append(out, w.state.clone())
		}
	}
	return out
}

// DeleteWorker removes a worker row, as retention does (§8 rule 5): its
// heartbeats still get 200, its claims of a matching step get 500 (§1.5).
func (s *Server) DeleteWorker(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.workers, canonicalID(id))
	s.bumpLocked()
}

type registerRequest struct {
	Name         string   `json:"name"`
	Capabilities []string `json:"capabilities"`
	Tags         []string `json:"tags"`
	Exclusive    bool     `json:"exclusive"`
	Version      *string  `json:"version"`
}

var registerFields = []field{
	{name: "name", kind: kString, required: true},
	{name: "capabilities", kind: kStringList, required: true},
	{name: "tags", kind: kStringList},
	{name: "exclusive", kind: kBool},
	{name: "version", kind: kString, nullable: true},
}

// handleRegister is POST /worker/register (§1.3).
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	if !decodeJSON(w, r, registerFields, &req) {
		return
	}
	caps, tags := slices.Clone(req.Capabilities), slices.Clone(req.Tags)
	if len(caps) == 0 {
		// Legacy shim: ability tokens in tags move to capabilities.
		var rest []string
		for _, t := range tags {
			if slices.Contains(abilityTokens, t) {
				caps = append(caps, t)
			} else {
				rest = append(rest, t)
			}
		}
		if len(caps) > 0 {
			s.log.Warn("register: ability tokens in tags are deprecated, moved to capabilities", "name", req.Name)
			tags = rest
		}
	}
	if len(caps) == 0 {
		writeError(w, http.StatusBadRequest, `worker registration requires at least one capability (e.g. "capabilities": ["script"])`)
		return
	}
	for _, c := range caps {
		if !slices.Contains(abilityTokens, c) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown capability '%s'. Known: [%s]", c, strings.Join(abilityTokens, ", ")))
			return
		}
	}
	for _, t := range tags {
		if slices.Contains(abilityTokens, t) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tag '%s' is an ability; list it in capabilities, not tags", t))
			return
		}
	}
	if tags == nil {
		tags = []string{}
	}
	id := uuid.NewString()
	s.mu.Lock()
	now := s.now()
	s.workers[id] = &worker{state: WorkerState{ID: id, Name: req.Name, Capabilities: caps, Tags: tags,
		Exclusive: req.Exclusive, Version: req.Version, Status: WorkerActive, RegisteredAt: now, LastHeartbeat: now}}
	s.workerList = append(s.workerList, id)
	s.bumpLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"worker_id": id})
}

type workerIDRequest struct {
	WorkerID string `json:"worker_id"`
}

var workerIDFields = []field{{name: "worker_id", kind: kString, required: true}}

// handleHeartbeat is POST /worker/heartbeat (§1.4): 200 even when no row
// matches, and it re-activates an inactive worker.
func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	var req workerIDRequest
	if !decodeJSON(w, r, workerIDFields, &req) {
		return
	}
	id, ok := workerUUID(w, req.WorkerID)
	if !ok {
		return
	}
	s.mu.Lock()
	if wk := s.workers[id]; wk != nil {
		wk.state.LastHeartbeat = s.now()
		wk.state.Status = WorkerActive
		wk.state.Heartbeats++
		s.bumpLocked()
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, statusOK)
}
