package fakeserver

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// DefaultToken is the worker token a Server accepts when Options.Token is
// empty. The real server refuses tokens shorter than 32 characters (§1.1).
const DefaultToken = "stroem-fake-server-dev-token-0123456789"

const (
	// maxJSONBody is axum's default body limit for JSON endpoints (§1.1).
	maxJSONBody = 2 << 20
	// maxRecordedBody caps the body kept per recorded request.
	maxRecordedBody = 64 << 10
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Token is the worker token; empty means DefaultToken.
	Token string
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
	// Now is the clock used for timestamps and by Sweep; nil means time.Now.
	Now func() time.Time
	// HeartbeatTimeout is recovery rule 1's limit (§8); 0 means 120 s.
	HeartbeatTimeout time.Duration
	// UnmatchedStepTimeout is recovery rule 4's limit (§8); 0 means 30 s.
	UnmatchedStepTimeout time.Duration
	// OnLog, when set, receives every stored log batch (called with the
	// server's lock held, in arrival order) and Logs returns nothing: for
	// benchmarks that pass more output than memory should keep.
	OnLog func(jobID string, recs []LogRecord)
}

// Server is the fake Strøm server. Create it with New.
type Server struct {
	token  string
	log    *slog.Logger
	now    func() time.Time
	hbTTL  time.Duration
	unmTTL time.Duration
	mux    *http.ServeMux

	onLog func(jobID string, recs []LogRecord)

	mu         sync.Mutex
	changed    chan struct{}
	jobs       map[string]*job
	jobOrder   []*job
	queue      []*step // every step ever enqueued, in FIFO order (claim order)
	workers    map[string]*worker
	workerList []string // registration order, for Workers()
	logs       map[string][]LogRecord
	batches    map[string][]logBatch
	seed       maphash.Seed // for log batch checksums
	cancelSet  map[string]bool
	workspaces map[string]*workspace
	artifacts  map[artifactKey][]Artifact
	states     map[stateKey]Snapshot
	requests   []Request
	fault      func(*http.Request) Fault
	down       bool
}

type job struct {
	id        string
	taskName  string
	workspace string
	status    string
	created   time.Time
	started   time.Time
	finished  time.Time
	steps     []*step
}

type step struct {
	job     *job
	spec    StepSpec
	ability string
	ready   time.Time
	// retryAt is when a re-queued step becomes claimable (retry delay).
	retryAt time.Time
	state   StepState
}

type worker struct {
	state WorkerState
}

// New returns a Server with an empty queue and one workspace, "default",
// whose tarball is empty (so a step that names no workspace still has one
// to download, as on a real server).
func New(opts Options) *Server {
	s := &Server{
		token:      opts.Token,
		log:        opts.Logger,
		now:        opts.Now,
		hbTTL:      opts.HeartbeatTimeout,
		unmTTL:     opts.UnmatchedStepTimeout,
		onLog:      opts.OnLog,
		changed:    make(chan struct{}),
		jobs:       map[string]*job{},
		workers:    map[string]*worker{},
		logs:       map[string][]LogRecord{},
		batches:    map[string][]logBatch{},
		seed:       maphash.MakeSeed(),
		cancelSet:  map[string]bool{},
		workspaces: map[string]*workspace{},
		artifacts:  map[artifactKey][]Artifact{},
		states:     map[stateKey]Snapshot{},
	}
	if s.token == "" {
		s.token = DefaultToken
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.hbTTL <= 0 {
		s.hbTTL = 120 * time.Second
	}
	if s.unmTTL <= 0 {
		s.unmTTL = 30 * time.Second
	}
	s.AddWorkspace(DefaultWorkspace, "", EmptyTarball())
	s.routes()
	return s
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("POST /worker/register", s.handleRegister)
	m.HandleFunc("POST /worker/heartbeat", s.handleHeartbeat)
	m.HandleFunc("POST /worker/jobs/claim", s.handleClaim)
	m.HandleFunc("POST /worker/jobs/{id}/steps/{step}/start", s.handleStart)
	m.HandleFunc("POST /worker/jobs/{id}/steps/{step}/complete", s.handleComplete)
	m.HandleFunc("POST /worker/jobs/{id}/logs", s.handleLogs)
	m.HandleFunc("GET /worker/jobs/{id}/cancelled", s.handleCancelled)
	m.HandleFunc("GET /worker/workspace/{ws}", s.handleWorkspace)
	m.HandleFunc("POST /worker/jobs/{id}/steps/{step}/artifacts/{name...}", s.handleUploadArtifact)
	m.HandleFunc("DELETE /worker/jobs/{id}/steps/{step}/artifacts", s.handleDeleteArtifacts)
	m.HandleFunc("GET /worker/state/{ws}/{task}", s.handleGetState)
	m.HandleFunc("POST /worker/state/{ws}/{task}/{job_id}", s.handlePutState)
	m.HandleFunc("GET /worker/global-state/{ws}", s.handleGetState)
	m.HandleFunc("POST /worker/global-state/{ws}/{job_id}", s.handlePutState)
	m.HandleFunc("POST /dev/jobs", s.handleDevAddJob)
	m.HandleFunc("GET /dev/jobs", s.handleDevListJobs)
	m.HandleFunc("GET /dev/jobs/{id}", s.handleDevGetJob)
	m.HandleFunc("POST /dev/jobs/{id}/cancel", s.handleDevCancel)
	m.HandleFunc("POST /dev/workspaces/{ws}", s.handleDevAddWorkspace)
	m.HandleFunc("POST /dev/sweep", s.handleDevSweep)
	s.mux = m
}

// Changed returns a channel that is closed at the next change of state
// (any request, any test-facing mutation). Take it before looking at the
// state, so that a change in between is not missed.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// bumpLocked wakes everyone waiting on Changed. Callers hold s.mu.
func (s *Server) bumpLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitFor returns nil as soon as cond(s) is true, re-evaluating it after
// every change of state, or ctx's error when ctx ends first. cond is
// called without the lock held, so it may use the query methods.
func (s *Server) WaitFor(ctx context.Context, cond func(*Server) bool) error {
	for {
		ch := s.Changed()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writeJSON writes v as a JSON reply.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// writeError writes the handler error shape {"error": msg} (§1.1).
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// writeInternal is every 500: the detail stays in the server log (§1.1).
func writeInternal(w http.ResponseWriter) {
	writeError(w, http.StatusInternalServerError, "Internal server error")
}

// writePlain is axum's extractor rejection: plain text, not JSON (§1.1).
func writePlain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, msg)
}

var statusOK = map[string]string{"status": "ok"}
