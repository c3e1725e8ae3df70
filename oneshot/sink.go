package oneshot

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/handoff"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"github.com/stroem-worker/stroem-worker/shared/redact"
	"github.com/stroem-worker/stroem-worker/shared/runner"
)

const (
	// stderrTailBytes caps the stderr quoted in a failed step's error.
	stderrTailBytes = 64 << 10
	// maxOutputBytes is the largest OUTPUT value that fits a completion
	// body under the server's 2 MiB limit.
	maxOutputBytes = 2<<20 - 4<<10
)

// sink is where a runner's output goes: OUTPUT and STATE lines are
// parsed from the whole line, secrets are masked, stderr's tail is kept
// for the error text, and every line is spooled (and so shipped).
type sink struct {
	spool    *logstream.Spool
	redactor *redact.Redactor
	log      *slog.Logger
	events   *handoff.Writer
	exited   atomic.Bool
	// handle is the runner's handle, kept until it must be on disk.
	handle atomic.Pointer[json.RawMessage]
	saved  atomic.Bool

	mu     sync.Mutex
	output json.RawMessage
	state  stateLines
	tail   *stderrTail
	// outputProblem says why the last OUTPUT line was not taken ("" if
	// none was refused); reported once, at the end.
	outputProblem string
	tooLarge      bool
}

func newSink(s *stepRun, events *handoff.Writer) *sink {
	return &sink{spool: s.spool, redactor: s.redactor, log: s.log, events: events, tail: newStderrTail(stderrTailBytes)}
}

var _ runner.Output = (*sink)(nil)

// Line handles one line of the step's output.
func (k *sink) Line(stream string, line []byte) {
	if stream == runner.Stdout {
		k.parse(line)
	}
	masked := k.redactor.Line(line)
	if stream == runner.Stderr {
		k.mu.Lock()
		k.tail.add(masked)
		k.mu.Unlock()
	}
	if err := k.spool.Append(stream, time.Now(), masked); err != nil {
		k.log.Error("spooling output", "stream", stream, "error", err.Error())
	}
}

// parse takes OUTPUT: and STATE: lines from stdout (contract §4).
func (k *sink) parse(line []byte) {
	if bytes.HasPrefix(line, outputPrefix) {
		v, problem := parseOutputLine(line)
		k.mu.Lock()
		defer k.mu.Unlock()
		switch {
		case len(line) >= runner.MaxLineBytes || len(v) > maxOutputBytes:
			k.tooLarge = true
		case problem != "":
			k.outputProblem = problem
		default:
			k.output, k.tooLarge = v, false
		}
		return
	}
	k.mu.Lock()
	k.state.add(line)
	k.mu.Unlock()
}

// Started records the runner's handle, for whoever has to stop the step
// should this process die: the supervisor, told at once, or, without one,
// whoever delivers the spool (the handle is saved in it).
func (k *sink) Started(handle json.RawMessage) {
	k.handle.Store(&handle)
	if k.events == nil {
		k.saveHandle()
		return
	}
	k.events.Emit(handoff.Event{Kind: handoff.Spawned, Handle: handle})
}

// saveHandle writes the handle into the spool (once): at start without a
// supervisor, or when the supervisor is gone.
func (k *sink) saveHandle() {
	h := k.handle.Load()
	if h == nil || !k.saved.CompareAndSwap(false, true) {
		return
	}
	if err := delivery.SaveHandle(k.spool.Dir(), *h); err != nil {
		k.log.Warn("recording the step's handle", "error", err.Error())
	}
}

// Exited marks the step's code as ended on its own.
func (k *sink) Exited() { k.exited.Store(true) }

// result returns the OUTPUT value and the parsed state.
func (k *sink) result() (json.RawMessage, *stateLines, *stderrTail) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.outputProblem != "" {
		// Once per step, in the worker's log: the step's author reads the
		// step log, the operator reads this.
		k.log.Info("an OUTPUT: line was not valid JSON and was ignored", "reason", k.outputProblem)
	}
	return k.output, &k.state, k.tail
}
