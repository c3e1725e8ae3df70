package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tsRoom is what the kubelet's timestamp prefix adds to a line
// ("2006-01-02T15:04:05.000000000Z ").
const tsRoom = 64

// follower streams the step container's log (pods/log with follow and
// timestamps) to the Output. The kubelet merges stdout and stderr: every
// line is reported as stdout, as by the reference worker.
//
// A follow stream that ends is not proof that the container ended: a
// kubelet restart or a dropped connection looks like a clean end of
// stream through the API server. So at every end the follower reads the
// pod: while the step container runs it reconnects with sinceTime (which
// has second precision) and skips what it already has by the lines'
// nanosecond timestamps; once the container has terminated it reads what
// is left once more without follow, and stops.
type follower struct {
	s      *podRun
	cancel context.CancelFunc
	done   chan struct{}

	// last is the timestamp of the newest line emitted, and atLast how
	// many lines carried exactly that timestamp.
	last   time.Time
	atLast int
}

func (s *podRun) startLogs() {
	if s.logs != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{s: s, cancel: cancel, done: make(chan struct{})}
	s.logs = f
	go func() {
		defer close(f.done)
		f.run(ctx)
	}()
}

// drainLogs lets the follower read to the end of the log, for at most
// drainLinger, then stops it.
func (s *podRun) drainLogs() {
	if s.logs == nil {
		return
	}
	t := time.NewTimer(drainLinger)
	defer t.Stop()
	select {
	case <-s.logs.done:
	case <-t.C:
		s.log.Warn("the pod's log did not end after its step container terminated; not reading it any longer")
	}
	s.logs.stop()
}

func (f *follower) stop() {
	f.cancel()
	<-f.done
}

func (f *follower) run(ctx context.Context) {
	s := f.s
	failures := 0
	final := false
	reported := false
	for {
		opts := &corev1.PodLogOptions{Container: stepContainer, Follow: !final, Timestamps: true}
		skipUntil, skipEqual := f.last, f.atLast
		if !f.last.IsZero() {
			since := metav1.NewTime(f.last)
			opts.SinceTime = &since
		}
		rc, err := s.c.podLogs(ctx, s.ns, s.name, opts)
		if err != nil {
			if ctx.Err() != nil || apierrors.IsNotFound(err) {
				return
			}
			failures++
			if !reported {
				// Once, the first: the rest are the same in a loop.
				s.out.Line(runner.Stderr, []byte("Failed to retrieve logs: "+err.Error()))
				reported = true
			}
			if failures >= s.r.maxFailures() || !sleep(ctx, backoffDelay(failures)) {
				return
			}
			continue
		}
		got := 0
		err = logstream.ReadLines(rc, runner.MaxLineBytes+tsRoom, func(line []byte) {
			if f.emit(line, skipUntil, &skipEqual) {
				got++
			}
		})
		rc.Close()
		if ctx.Err() != nil || final {
			return
		}
		if err != nil {
			s.log.Debug("pod log stream broke", "error", err.Error())
		}
		gctx, cancel := context.WithTimeout(ctx, callTimeout)
		p, gerr := s.c.getPod(gctx, s.ns, s.name)
		cancel()
		switch {
		case apierrors.IsNotFound(gerr):
			return
		case gerr != nil:
			failures++
		case podGone(p):
			final = true
			continue
		default:
			if cs := status(p.Status.ContainerStatuses, stepContainer); cs == nil || cs.State.Terminated != nil {
				final = true
				continue
			}
			s.log.Info("pod log stream ended while the step runs; reconnecting", "lines", got)
			if got > 0 {
				failures = 0
				continue
			}
			failures++
		}
		if failures >= s.r.maxFailures() {
			s.out.Line(runner.Stderr, []byte(fmt.Sprintf("Failed to retrieve logs: giving up after %d attempts", failures)))
			return
		}
		if !sleep(ctx, backoffDelay(failures)) {
			return
		}
	}
}

// emit sends one line of the log to the Output, without its timestamp,
// unless a reconnect gave it again: lines older than skipUntil, and the
// first skipEqual of those stamped exactly skipUntil, were sent already.
func (f *follower) emit(line []byte, skipUntil time.Time, skipEqual *int) bool {
	content := line
	var at time.Time
	if ts, rest, ok := bytes.Cut(line, []byte(" ")); ok {
		if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
			at, content = t, rest
		}
	}
	if !at.IsZero() && !skipUntil.IsZero() {
		switch {
		case at.Before(skipUntil):
			return false
		case at.Equal(skipUntil) && *skipEqual > 0:
			*skipEqual--
			return false
		}
	}
	if !at.IsZero() {
		if at.Equal(f.last) {
			f.atLast++
		} else if at.After(f.last) {
			f.last, f.atLast = at, 1
		}
	}
	f.s.out.Line(runner.Stdout, content)
	return true
}

// initLogs puts the last lines of a failed init container's log on
// stderr, where the step's error text takes them from.
func (s *podRun) initLogs() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	tail := int64(50)
	rc, err := s.c.podLogs(ctx, s.ns, s.name, &corev1.PodLogOptions{Container: initContainer, TailLines: &tail})
	if err != nil {
		s.out.Line(runner.Stderr, []byte("Failed to retrieve logs: "+err.Error()))
		return
	}
	defer rc.Close()
	if err := logstream.ReadLines(rc, runner.MaxLineBytes, func(line []byte) { s.out.Line(runner.Stderr, line) }); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("reading the init container's log", "error", err.Error())
	}
}
