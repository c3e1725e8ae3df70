package main

import (
	"context"
	"time"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/config"
)

// ClaimAndRunCmd is `stroem-worker claim-and-run`.
type ClaimAndRunCmd struct {
	Wait            time.Duration `help:"Keep polling for work this long before giving up (e.g. 30s, 5m); 0 claims once." default:"0s"`
	NoWorkExitCode  int           `name:"no-work-exit-code" help:"Exit code when no work was available (default 0, so cron and Kubernetes do not retry)." default:"0"`
	ReflectStepExit bool          `name:"reflect-step-exit" help:"Exit with the step's own exit code (1 for a worker-side failure, 128+N for signal N) once its result is delivered."`
	Deadline        time.Duration `env:"STROEM_DEADLINE" help:"Hard limit for the whole run (e.g. Kubernetes activeDeadlineSeconds): the step is stopped and reported in time." default:"0s"`
	WorkerID        string        `name:"worker-id" env:"STROEM_WORKER_ID" help:"Use this worker id instead of the persisted one."`
	HandoffFD       int           `name:"handoff-fd" hidden:"" help:"Read config and an already claimed step from this file descriptor; events go to the next one (used by supervise)."`
}

// Run runs one claim-and-run cycle.
func (c *ClaimAndRunCmd) Run(ctx context.Context, g *Globals) error {
	opts := oneshot.Options{Wait: c.Wait, WorkerID: c.WorkerID}
	var cfg *config.Config
	if c.HandoffFD > 0 {
		h, events, err := readHandoff(c.HandoffFD)
		if err != nil {
			return &usageError{err}
		}
		cfg = h.Config
		opts.Step, opts.WorkerID, opts.SupervisorPID, opts.Events = h.Step, h.WorkerID, h.SupervisorPID, events
	} else {
		var err error
		if cfg, err = g.load(nil); err != nil {
			return err
		}
	}
	if c.Deadline > 0 {
		// The step stops early enough for cancel_grace and delivery to fit
		// before the hard end (at least 5 s of delivery, or 10% of it).
		hard := time.Now().Add(c.Deadline)
		reserve := cfg.CancelGrace() + max(5*time.Second, c.Deadline/10)
		opts.DeliverBy = hard
		opts.Deadline = hard.Add(-min(reserve, c.Deadline/2))
	}
	log := g.logger(cfg)
	out, err := oneshot.Run(ctx, cfg, opts, oneshot.Deps{Logger: log, Version: version})
	if err != nil {
		return err
	}
	if !out.Claimed {
		log.Info("no work available")
		if c.NoWorkExitCode != 0 {
			return &exitError{code: c.NoWorkExitCode}
		}
		return nil
	}
	if c.ReflectStepExit && !out.Succeeded() {
		return &exitError{code: reflectedCode(out)}
	}
	return nil
}

// readHandoff reads the supervisor's handoff from fd and opens fd+1 for
// progress events.
func readHandoff(fd int) (*oneshot.Handoff, *oneshot.EventWriter, error) {
	f, err := oneshot.OpenFD(fd, "handoff")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	h, err := oneshot.ReadHandoff(f)
	if err != nil {
		return nil, nil, err
	}
	ev, err := oneshot.OpenFD(fd+1, "events")
	if err != nil {
		return nil, nil, err
	}
	return h, oneshot.NewEventWriter(ev), nil
}

// reflectedCode is the step's own exit status as a process exit code.
func reflectedCode(out oneshot.Outcome) int {
	switch {
	case out.ExitCode > 0 && out.ExitCode < 256:
		return out.ExitCode
	case out.SignalNumber > 0:
		return 128 + out.SignalNumber
	}
	return 1
}
