package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
)

// MaxLineBytes is the longest line a runner hands to Output whole; longer
// ones are cut into pieces of this size. It lets an OUTPUT: line as large
// as a completion body can carry (the server's 2 MiB limit) be parsed,
// while memory per stream stays bounded. The spool cuts lines again, for
// transport, at logstream.MaxLineBytes.
const MaxLineBytes = 2 << 20

// Streams of a step's output.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Dirs are a step's own directories, on the worker host.
type Dirs struct {
	Artifacts, State, StateOut, GlobalState, GlobalStateOut string
}

// Job is a step prepared to run.
type Job struct {
	Step *api.Step
	Spec *api.ActionSpec
	// Workspace is the extracted workspace revision on the worker host
	// ("" when the step has none).
	Workspace string
	// Env is the step's whole environment, KEY=VALUE, as the runner's
	// Environment asked for it.
	Env []string
	// Dirs are the step's directories on the worker host.
	Dirs Dirs
	// WorkerID and Attempt identify the claim, for labels and names.
	WorkerID, Attempt string
	// Key names the step's spool (delivery.Key): whoever holds its lock
	// owns the step, so a container labelled with it whose spool nobody
	// holds is a leftover of a dead worker.
	Key string
	// Signal and Grace are how a stop is asked for: Signal first, then
	// Grace for everything the step started to end, then SIGKILL.
	Signal syscall.Signal
	Grace  time.Duration
}

// Output receives what a running step produces. Line may be called from
// one goroutine per stream at once.
type Output interface {
	// Line is one line of a stream, without its newline or trailing '\r',
	// valid UTF-8, at most MaxLineBytes. The slice is only valid during
	// the call.
	Line(stream string, line []byte)
	// Started records what to stop should the worker die while the step
	// runs (a process group, a container, a pod): a JSON object whose
	// "kind" names the runner, for Set.Kill.
	Started(handle json.RawMessage)
	// Exited says the step's code has ended on its own: a stop asked for
	// from now on (Run may still be draining output) changes nothing.
	Exited()
}

// Exit is how the step's code ended on its own or after a stop.
type Exit struct {
	// Code is the exit code (for containers, 128+N after signal N).
	Code int
	// Signal is the signal that ended a local process, or 0.
	Signal syscall.Signal
}

// Runner runs the code of one step at a time per Run call.
type Runner interface {
	// Environment returns what a step's environment is built on (the
	// worker's own for a local process, nothing for a container) and the
	// variables that name its directories as the step sees them (a
	// container action without the workspace gets no state directories).
	Environment(step *api.Step, worker []string, d Dirs) (base []string, dirVars map[string]string)
	// Run runs the step and returns once it has ended and its output is
	// drained. When ctx ends, the step is stopped (Job.Signal, Job.Grace,
	// then killed) and Run returns once it is gone. An error means the
	// step could not be run; *Error's text is reported as it is, any
	// other's after "Failed to execute step: ".
	Run(ctx context.Context, job *Job, out Output) (Exit, error)
	// Kill stops what a step left running when its worker died, given the
	// handle the runner passed to Output.Started.
	Kill(ctx context.Context, handle json.RawMessage) error
}

// Error is a failure to run a step whose text is the step's error as the
// server's own worker words it (e.g. "Failed to build run config: ...").
type Error struct{ Text string }

func (e *Error) Error() string { return e.Text }

// Errorf makes an *Error.
func Errorf(format string, args ...any) error { return &Error{Text: fmt.Sprintf(format, args...)} }
