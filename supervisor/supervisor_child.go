package supervisor

import (
	"bufio"
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

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/process"
)

// child is one forked claim-and-run process running one step.
type child struct {
	step *api.Step
	// workerID is the id the step was claimed with: it must keep getting
	// heartbeats even after the supervisor registers again.
	workerID string
	cmd      *exec.Cmd
	started  time.Time
	done     chan struct{}
	// eventsDone closes when the child's event pipe reaches EOF.
	eventsDone chan struct{}

	mu        sync.Mutex
	pgid      int
	delivered bool
	last      oneshot.Event
}

// startChild forks a claim-and-run child for step; release frees its slot
// once the child has exited and its step is accounted for.
func (s *supervisor) startChild(step *api.Step, release func()) {
	c := &child{step: step, workerID: s.id(), started: time.Now(), done: make(chan struct{}), eventsDone: make(chan struct{})}
	log := s.log.With(slog.String("job_id", step.JobID), slog.String("step", step.StepName))
	if err := s.fork(c); err != nil {
		log.Error("starting worker process for step", "error", err.Error())
		s.metrics.childCrashes.Inc()
		s.reportDead(c, fmt.Sprintf("could not start worker process: %v", err), log)
		release()
		return
	}
	s.mu.Lock()
	s.children[c] = struct{}{}
	s.mu.Unlock()
	s.metrics.running.Inc()
	s.childWG.Go(func() {
		defer release()
		s.watch(c, log)
		s.mu.Lock()
		delete(s.children, c)
		s.mu.Unlock()
		s.metrics.running.Dec()
		close(c.done)
	})
}

// fork starts the child and hands it the config and step over a pipe.
func (s *supervisor) fork(c *child) error {
	handR, handW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating handoff pipe: %w", err)
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		handR.Close()
		handW.Close()
		return fmt.Errorf("creating event pipe: %w", err)
	}
	args := append(append([]string{}, s.deps.Args...), "claim-and-run", "--handoff-fd", "3")
	cmd := exec.Command(s.deps.Executable, args...)
	// Keep our own argv[0]: a binary that dispatches on its name (a
	// test binary under testscript, a busybox-style link) stays the same
	// program in the child.
	cmd.Args[0] = s.deps.Argv0
	cmd.ExtraFiles = []*os.File{handR, evW}
	cmd.Stdout = s.deps.ChildStderr
	cmd.Stderr = s.deps.ChildStderr
	// Its own process group: a Ctrl-C in a terminal reaches the supervisor
	// only, which then decides between drain and cancel.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Registered, so the orphan sweep never reaps a live child.
	err = process.StartCmd(cmd)
	handR.Close()
	evW.Close()
	if err != nil {
		handW.Close()
		evR.Close()
		return err
	}
	c.cmd = cmd
	h := oneshot.Handoff{Config: s.cfg, Step: c.step, WorkerID: c.workerID, SupervisorPID: os.Getpid()}
	err = json.NewEncoder(handW).Encode(h)
	handW.Close()
	if err != nil {
		// The child reads a broken handoff, exits 2, and watch reports the
		// step failed.
		s.log.Error("writing handoff to worker process", "error", err.Error())
	}
	go func() {
		defer evR.Close()
		sc := bufio.NewScanner(evR)
		for sc.Scan() {
			var ev oneshot.Event
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			c.mu.Lock()
			switch ev.Kind {
			case "spawned":
				c.pgid = ev.Pid
			case "delivered":
				c.delivered = true
			case "done":
				c.delivered = c.delivered || ev.Delivered
				c.last = ev
			}
			c.mu.Unlock()
		}
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
	delivered, pgid, last := c.delivered, c.pgid, c.last
	c.mu.Unlock()
	s.metrics.duration.Observe(time.Since(c.started).Seconds())
	s.metrics.logLines.Add(float64(last.Lines))
	s.metrics.logBytes.Add(float64(last.Bytes))
	s.metrics.logDropped.Add(float64(last.Dropped))
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
		if ee.ExitCode() == exitNotDelivered && spoolExists(s.cfg, c.step) {
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
	if pgid > 0 {
		// What is left of the step's process group dies with its worker.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if _, err := process.Sweep(); err != nil {
		log.Warn("sweeping orphaned processes", "error", err.Error())
	}
	s.reportDead(c, cause, log)
}

// exitNotDelivered is claim-and-run's "result not delivered" exit code.
const exitNotDelivered = 75

// reportDead reports the step of a dead child failed: from its spool when
// there is one (its logs go out first), else directly.
func (s *supervisor) reportDead(c *child, cause string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DeliveryTimeout())
	defer cancel()
	root := oneshot.SpoolRoot(s.cfg)
	dir := filepath.Join(root, oneshot.SpoolKey(c.step.JobID, c.step.StepName))
	if _, err := os.Stat(dir); err == nil {
		if err := oneshot.DeliverSpool(ctx, root, dir, s.client, cause); err != nil {
			log.Error("delivering the dead worker's spool", "error", err.Error())
		}
		return
	}
	msg := oneshot.DiedMessage(c.step.StepName, cause)
	if err := s.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 15 * time.Second}).
		Complete(ctx, c.step.JobID, c.step.StepName, api.CompleteRequest{ExitCode: -1, Error: &msg}); err != nil {
		log.Error("reporting the step of a dead worker process failed; the server's heartbeat timeout will fail it", "error", err.Error())
	}
}

// spoolExists reports whether a step has a spool on disk.
func spoolExists(cfg *config.Config, step *api.Step) bool {
	_, err := os.Stat(filepath.Join(oneshot.SpoolRoot(cfg), oneshot.SpoolKey(step.JobID, step.StepName)))
	return err == nil
}

// deliverLater retries pending spools in the background.
func (s *supervisor) deliverLater() {
	s.childWG.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DeliveryTimeout())
		defer cancel()
		if _, err := oneshot.DeliverPending(ctx, oneshot.SpoolRoot(s.cfg), s.client, s.log, "the worker process gave up delivering"); err != nil {
			s.log.Warn("delivering pending results", "error", err.Error())
		}
	})
}
