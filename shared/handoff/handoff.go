package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
)

// File descriptors of a forked child. They follow from the order of
// exec.Cmd.ExtraFiles (3 is the first), set by Parent.Attach.
const (
	FD       = 3
	EventsFD = 4
)

// ExitNotDelivered is claim-and-run's exit code when a step ran but its
// logs or result are not delivered yet (sysexits EX_TEMPFAIL): the spool
// holds them and the next run, or the supervisor, delivers them.
const ExitNotDelivered = 75

// SupervisorGoneSignal is what the kernel sends a child when its
// supervisor dies (PR_SET_PDEATHSIG, set by Parent.Attach): the child then
// keeps what only the supervisor knew (the step's handle) in its spool.
const SupervisorGoneSignal = syscall.SIGUSR2

// maxHandoff bounds what a child reads from its handoff pipe.
const maxHandoff = 64 << 20

// Handoff is what a supervisor gives the child it forks for a step.
type Handoff struct {
	Config *config.Config `json:"config"`
	Step   *api.Step      `json:"step"`
	// WorkerID is the id the step was claimed with: its heartbeats, its
	// start report and its spool carry it.
	WorkerID string `json:"worker_id"`
	// Attempt names this claim of the step on this host, so that two
	// attempts of one step never share a spool (delivery.Key).
	Attempt string `json:"attempt"`
	// SupervisorPID heartbeats for WorkerID while it lives.
	SupervisorPID int `json:"supervisor_pid"`
}

// Read decodes a Handoff from r (the child's end of the pipe).
func Read(r io.Reader) (*Handoff, error) {
	var h Handoff
	if err := json.NewDecoder(io.LimitReader(r, maxHandoff)).Decode(&h); err != nil {
		return nil, fmt.Errorf("decoding handoff: %w", err)
	}
	if h.Config == nil || h.Step == nil || h.Step.JobID == "" || h.WorkerID == "" {
		return nil, errors.New("decoding handoff: config, step and worker_id are required")
	}
	return &h, nil
}

// Receive is the child's side: it reads the handoff from FD (blocking
// until the supervisor sends one) and opens EventsFD for events. Both are
// made close-on-exec first: inherited descriptors are not, and a step's
// processes must not hold the supervisor's pipes.
func Receive() (*Handoff, *Writer, error) {
	f, err := openFD(FD, "handoff")
	if err != nil {
		return nil, nil, err
	}
	ev, err := openFD(EventsFD, "events")
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	h, err := Read(f)
	f.Close()
	if err != nil {
		ev.Close()
		return nil, nil, err
	}
	return h, NewWriter(ev), nil
}

func openFD(fd int, name string) (*os.File, error) {
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

// Parent is the supervisor's side of one child's pipes.
type Parent struct {
	handR, handW *os.File
	evR, evW     *os.File
}

// NewParent makes the two pipes.
func NewParent() (*Parent, error) {
	handR, handW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating handoff pipe: %w", err)
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		handR.Close()
		handW.Close()
		return nil, fmt.Errorf("creating event pipe: %w", err)
	}
	return &Parent{handR: handR, handW: handW, evR: evR, evW: evW}, nil
}

// Attach gives cmd the child's ends as FD and EventsFD. Call Started
// after cmd.Start, whether it failed or not.
func (p *Parent) Attach(cmd *exec.Cmd) {
	cmd.ExtraFiles = []*os.File{p.handR, p.evW}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = SupervisorGoneSignal
}

// Started closes the parent's copies of the child's ends: the event
// reader then sees EOF when the child (and anything that inherited them)
// is gone.
func (p *Parent) Started() {
	p.handR.Close()
	p.evW.Close()
}

// Send writes h and closes the handoff pipe.
func (p *Parent) Send(h Handoff) error {
	err := json.NewEncoder(p.handW).Encode(h)
	if cerr := p.handW.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing handoff: %w", err)
	}
	return nil
}

// Events calls fn for each event until the child's end is closed, then
// closes the parent's end. Lines that are not events are skipped.
func (p *Parent) Events(fn func(Event)) {
	defer p.evR.Close()
	Scan(p.evR, fn)
}

// Close releases every pipe end still open (a child that never started).
func (p *Parent) Close() {
	for _, f := range []*os.File{p.handR, p.handW, p.evR, p.evW} {
		f.Close()
	}
}
