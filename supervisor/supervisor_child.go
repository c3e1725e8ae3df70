package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/handoff"
	"github.com/stroem-worker/stroem-worker/shared/process"
)

// child is one forked claim-and-run process running one step.
type child struct {
	step    *api.Step
	attempt string
	// workerID is the id the step was claimed with: it must keep getting
	// heartbeats even after the supervisor registers again.
	workerID string
	cmd      *exec.Cmd
	started  time.Time
	done     chan struct{}
	// eventsDone closes when the child's event pipe reaches EOF.
	eventsDone chan struct{}

	mu        sync.Mutex
	handle    json.RawMessage
	delivered bool
	last      handoff.Event
}

// key is the child's spool key.
func (c *child) key() string { return delivery.Key(c.step.JobID, c.step.StepName, c.attempt) }

// startChild forks a claim-and-run child for step; release frees its slot
// once the child has exited and its step is accounted for. A child that
// cannot be forked has its step reported in the background, so claiming
// is not held up by a server that is down.
func (s *supervisor) startChild(step *api.Step, attempt string, release func()) {
	c := &child{step: step, attempt: attempt, workerID: s.id(), started: time.Now(), done: make(chan struct{}), eventsDone: make(chan struct{})}
	log := s.log.With(slog.String("job_id", step.JobID), slog.String("step", step.StepName))
	forkErr := s.fork(c)
	s.mu.Lock()
	s.children[c] = struct{}{}
	s.mu.Unlock()
	s.metrics.running.Inc()
	s.childWG.Go(func() {
		defer release()
		if forkErr != nil {
			log.Error("starting worker process for step", "error", forkErr.Error())
			s.metrics.childCrashes.Inc()
			s.reportDead(c, fmt.Sprintf("could not start worker process: %v", forkErr), log)
		} else {
			s.watch(c, log)
		}
		s.mu.Lock()
		delete(s.children, c)
		s.mu.Unlock()
		s.metrics.running.Dec()
		close(c.done)
	})
}

// fork starts the child and hands it the config and step over a pipe.
func (s *supervisor) fork(c *child) error {
	p, err := handoff.NewParent()
	if err != nil {
		return err
	}
	args := append(append([]string{}, s.deps.Args...), "claim-and-run", "--handoff")
	cmd := exec.Command(s.deps.Executable, args...)
	// Keep our own argv[0]: a binary that dispatches on its name (a
	// test binary under testscript, a busybox-style link) stays the same
	// program in the child.
	cmd.Args[0] = s.deps.Argv0
	cmd.Stdout = s.deps.ChildStderr
	cmd.Stderr = s.deps.ChildStderr
	// Its own process group: a Ctrl-C in a terminal reaches the supervisor
	// only, which then decides between drain and cancel.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.Attach(cmd)
	// Registered, so the orphan sweep never reaps a live child.
	err = process.StartCmd(cmd)
	p.Started()
	if err != nil {
		p.Close()
		return err
	}
	c.cmd = cmd
	h := handoff.Handoff{Config: s.cfg, Step: c.step, WorkerID: c.workerID, Attempt: c.attempt, SupervisorPID: os.Getpid()}
	if err := p.Send(h); err != nil {
		// The child reads a broken handoff, exits 2, and watch reports the
		// step failed.
		s.log.Error("writing handoff to worker process", "error", err.Error())
	}
	go func() {
		p.Events(func(ev handoff.Event) {
			c.mu.Lock()
			defer c.mu.Unlock()
			switch ev.Kind {
			case handoff.Spawned:
				c.handle = ev.Handle
			case handoff.Delivered:
				c.delivered = true
			case handoff.Done:
				c.delivered = c.delivered || ev.Delivered
				c.last = ev
			case handoff.Unanswered:
				s.unanswered(ev.WorkerID)
			}
		})
		close(c.eventsDone)
	}()
	return nil
}

// watch waits for the child, then makes sure its step is accounted for:
// delivered by the child, or delivered from its spool, or reported failed.
func (s *supervisor) watch(c *child, log *slog.Logger) {
	err := process.WaitCmd(c.cmd)
	// The event pipe closes with the child; should anything else hold it
	// open, the child's exit is what counts.
	linger := time.NewTimer(2 * time.Second)
	select {
	case <-c.eventsDone:
	case <-linger.C:
		log.Warn("worker process exited but its event pipe is still open")
	}
	linger.Stop()
	c.mu.Lock()
	delivered, handle, last := c.delivered, c.handle, c.last
	c.mu.Unlock()
	s.metrics.duration.Observe(time.Since(c.started).Seconds())
	s.metrics.logLines.Add(float64(last.Lines))
	s.metrics.logBytes.Add(float64(last.Bytes))
	s.metrics.logDropped.Add(float64(last.Dropped))
	s.metrics.logLost.Add(float64(last.Lost))
	if delivered {
		result := "succeeded"
		if last.Failed {
			result = "failed"
		}
		s.metrics.finished.WithLabelValues(result).Inc()
		return
	}
	cause := "exited without reporting the step"
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		cause = ee.ProcessState.String()
		if ee.ExitCode() == handoff.ExitNotDelivered && s.spoolExists(c) {
			// The child gave up delivering; the spool is intact and is
			// retried by the pending-delivery pass.
			s.metrics.finished.WithLabelValues("undelivered").Inc()
			s.deliverLater()
			return
		}
	}
	s.metrics.childCrashes.Inc()
	s.metrics.finished.WithLabelValues("crashed").Inc()
	log.Error("worker process died before reporting its step", "cause", cause)
	if len(handle) > 0 {
		// What is left of the step dies with its worker (delivering the
		// spool would do it too; a child that died before its spool had
		// the handle saved is covered here).
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CancelGrace()+10*time.Second)
		if err := s.deps.Runners.Kill(ctx, handle); err != nil {
			log.Warn("stopping what the dead worker process's step left running", "error", err.Error())
		}
		cancel()
	}
	if _, err := process.Sweep(); err != nil {
		log.Warn("sweeping orphaned processes", "error", err.Error())
	}
	s.reportDead(c, cause, log)
}

// reportDead reports the step of a dead child failed: from its spool when
// there is one (its logs go out first), else directly.
func (s *supervisor) reportDead(c *child, cause string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DeliveryTimeout())
	defer cancel()
	if s.spoolExists(c) {
		if err := s.deliverer.One(ctx, c.key(), cause); err != nil {
			log.Error("delivering the dead worker's spool", "error", err.Error())
		}
		return
	}
	msg := delivery.DiedMessage(c.step.StepName, cause)
	if err := s.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 15 * time.Second}).
		Complete(ctx, c.step.JobID, c.step.StepName, api.CompleteRequest{ExitCode: -1, Error: &msg}); err != nil {
		log.Error("reporting the step of a dead worker process failed; the server's heartbeat timeout will fail it", "error", err.Error())
	}
}

// spoolExists reports whether the child's step has a spool on disk.
func (s *supervisor) spoolExists(c *child) bool {
	_, err := os.Stat(filepath.Join(s.deliverer.Root, c.key()))
	return err == nil
}

// deliverLater retries pending spools in the background.
func (s *supervisor) deliverLater() {
	s.childWG.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DeliveryTimeout())
		defer cancel()
		if _, err := s.deliverer.Pending(ctx, "the worker process gave up delivering"); err != nil {
			s.log.Warn("delivering pending results", "error", err.Error())
		}
	})
}
