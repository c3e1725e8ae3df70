package main

import (
	"context"
	"fmt"
	"time"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/handoff"
)

// ClaimAndRunCmd is `stroem-worker claim-and-run`.
type ClaimAndRunCmd struct {
	Wait            time.Duration `help:"Keep polling for work this long before giving up (e.g. 30s, 5m); 0 claims once." default:"0s"`
	NoWorkExitCode  int           `name:"no-work-exit-code" help:"Exit code when no work was available (default 0, so cron and Kubernetes do not retry)." default:"0"`
	ReflectStepExit bool          `name:"reflect-step-exit" help:"Exit with the step's own exit code (1 for a worker-side failure, 128+N for signal N) once its result is delivered."`
	Deadline        time.Duration `env:"STROEM_DEADLINE" help:"Hard limit for the whole run (e.g. Kubernetes activeDeadlineSeconds): the step is stopped and reported in time." default:"0s"`
	WorkerID        string        `name:"worker-id" env:"STROEM_WORKER_ID" help:"Use this worker id instead of the persisted one."`
	Handoff         bool          `hidden:"" help:"Take config and an already claimed step from the supervisor's pipe (fd 3); events go to fd 4 (used by supervise)."`
}

// Run runs one claim-and-run cycle.
func (c *ClaimAndRunCmd) Run(ctx context.Context, g *Globals) error {
	opts := oneshot.Options{Wait: c.Wait, WorkerID: c.WorkerID}
	var cfg *config.Config
	if c.Handoff {
		h, events, err := handoff.Receive()
		if err != nil {
			return &usageError{err}
		}
		cfg, opts.Handoff, opts.Events = h.Config, h, events
	} else {
		var err error
		if cfg, err = g.load(nil); err != nil {
			return err
		}
	}
	switch {
	case c.Deadline < 0:
		return &usageError{fmt.Errorf("--deadline %s is negative; give the time the run may take, e.g. 10m, or 0 for none", c.Deadline)}
	case c.Deadline > 0:
		opts.HardDeadline = time.Now().Add(c.Deadline)
	}
	log := g.logger(cfg)
	set, err := runners(cfg, log)
	if err != nil {
		return err
	}
	out, err := oneshot.Run(ctx, cfg, opts, oneshot.Deps{Logger: log, Version: version, Runners: set})
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
