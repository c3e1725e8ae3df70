package handoff

import (
	"bufio"
	"encoding/json"
	"io"
	"sync"
)

// Kind says what an Event reports.
type Kind string

const (
	// Spawned: the step's code started; Handle says what to stop should
	// the child die.
	Spawned Kind = "spawned"
	// Delivered: the step's result reached the server. Sent before the
	// child removes its spool, so a supervisor never reports it again.
	Delivered Kind = "delivered"
	// Done: the child is finishing; the figures are for metrics.
	Done Kind = "done"
	// Unanswered: a step result sent under WorkerID got no answer and may
	// or may not have arrived; that worker id must go silent.
	Unanswered Kind = "unanswered"
)

// Event is a progress report from a child to its supervisor.
type Event struct {
	Kind Kind `json:"kind"`
	// Handle (Spawned) is the runner's handle of the step's code.
	Handle json.RawMessage `json:"handle,omitempty"`
	// Delivered, ExitCode, Failed and the log figures (Done).
	Delivered bool  `json:"delivered,omitempty"`
	ExitCode  int   `json:"exit_code"`
	Failed    bool  `json:"failed,omitempty"`
	Lines     int64 `json:"lines,omitempty"`
	Bytes     int64 `json:"bytes,omitempty"`
	Dropped   int64 `json:"dropped,omitempty"`
	// Lost counts log lines that could be neither spooled nor sent.
	Lost int64 `json:"lost,omitempty"`
	// WorkerID (Unanswered) is the worker id to give up.
	WorkerID string `json:"worker_id,omitempty"`
}

// Writer writes Events as JSON lines; safe for concurrent use. A nil
// *Writer discards events (a claim-and-run without a supervisor).
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter writes events to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Emit writes one event. Errors are ignored: a supervisor that died must
// not stop the child from finishing its step.
func (e *Writer) Emit(ev Event) {
	if e == nil {
		return
	}
	data, _ := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(append(data, '\n'))
}

// Scan calls fn for each event read from r until EOF.
func Scan(r io.Reader, fn func(Event)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		var ev Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Kind != "" {
			fn(ev)
		}
	}
}
