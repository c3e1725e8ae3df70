package oneshot

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
)

// Handoff is what a supervisor gives the claim-and-run child it forks for
// a step, over a pipe (never argv or env, where the token would show):
// the supervisor's effective config, the claimed step and its worker id.
type Handoff struct {
	Config        *config.Config `json:"config"`
	Step          *api.Step      `json:"step"`
	WorkerID      string         `json:"worker_id"`
	SupervisorPID int            `json:"supervisor_pid"`
}

// ReadHandoff reads a Handoff from r (the child's end of the pipe).
func ReadHandoff(r io.Reader) (*Handoff, error) {
	var h Handoff
	dec := json.NewDecoder(io.LimitReader(r, 64<<20))
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("decoding handoff: %w", err)
	}
	if h.Config == nil || h.Step == nil || h.Step.JobID == "" || h.WorkerID == "" {
		return nil, fmt.Errorf("decoding handoff: config, step and worker_id are required")
	}
	return &h, nil
}

// Event is a progress report from a supervised child to its supervisor,
// one JSON object per line on the status pipe.
type Event struct {
	// Kind is "spawned" (the step's process started; Pid is its process
	// group) or "done" (the step is reported, or could not be).
	Kind      string `json:"kind"`
	Pid       int    `json:"pid,omitempty"`
	Delivered bool   `json:"delivered,omitempty"`
	ExitCode  int    `json:"exit_code"`
	Failed    bool   `json:"failed,omitempty"`
	Lines     int64  `json:"lines,omitempty"`
	Bytes     int64  `json:"bytes,omitempty"`
	Dropped   int64  `json:"dropped,omitempty"`
}

// EventWriter writes Events as JSON lines; safe for concurrent use. A nil
// *EventWriter discards events.
type EventWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewEventWriter writes events to w.
func NewEventWriter(w io.Writer) *EventWriter { return &EventWriter{w: w} }

// Emit writes one event; errors are ignored because a supervisor that
// died must not stop the child from finishing its step.
func (e *EventWriter) Emit(ev Event) {
	if e == nil {
		return
	}
	data, _ := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(append(data, '\n'))
}

// OpenFD returns the inherited file descriptor fd as a file, or an
// error. It is marked close-on-exec first: inherited descriptors are not,
// and a step process must not hold the supervisor's pipes (it would keep
// them open after the child died, and could write to them).
func OpenFD(fd int, name string) (*os.File, error) {
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), name)
	if f == nil {
		return nil, fmt.Errorf("file descriptor %d (%s) is not open", fd, name)
	}
	if _, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("file descriptor %d (%s): %w", fd, name, err)
	}
	return f, nil
}
