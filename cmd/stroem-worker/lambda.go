package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/lambdaruntime"
	"github.com/stroem-worker/stroem-worker/shared/runner"
)

// LambdaCmd is `stroem-worker lambda`: the binary as an AWS Lambda custom
// runtime (`bootstrap`). Each invocation is one claim-and-run cycle.
type LambdaCmd struct {
	Reserve time.Duration `default:"15s" help:"Time kept back from the invocation deadline to stop the step and deliver its logs and result before Lambda freezes the process."`
	Wait    time.Duration `default:"0s" help:"Keep polling for work this long within one invocation."`
}

// LambdaResult is the invocation's response.
type LambdaResult struct {
	Claimed   bool   `json:"claimed"`
	JobID     string `json:"job_id,omitempty"`
	StepName  string `json:"step_name,omitempty"`
	ExitCode  int    `json:"exit_code"`
	Error     string `json:"error,omitempty"`
	Delivered bool   `json:"delivered"`
}

// Run serves invocations until the runtime stops the process.
func (c *LambdaCmd) Run(ctx context.Context, g *Globals) error {
	api := os.Getenv("AWS_LAMBDA_RUNTIME_API")
	if api == "" {
		return &usageError{errors.New("lambda: AWS_LAMBDA_RUNTIME_API is not set: this command is the bootstrap of an AWS Lambda custom runtime and runs only inside Lambda; elsewhere run claim-and-run")}
	}
	cfg, err := g.load(nil)
	if err != nil {
		return err
	}
	if cfg.Origins["workspace_dir"] == config.SourceDefault {
		// Lambda's only writable directory is /tmp.
		cfg.WorkspaceDir = "/tmp/stroem-worker"
	}
	log := g.logger(cfg)
	// One set for every invocation: a warm function keeps its clients.
	set, err := runners(cfg, log)
	if err != nil {
		return err
	}
	if err := checkRunners(ctx, cfg, set, log); err != nil {
		return err
	}
	rt := lambdaruntime.New(api)
	for {
		inv, err := rt.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		res, err := c.invoke(inv, cfg, log, set)
		// Everything is delivered before the answer: once it is sent,
		// Lambda may freeze the process.
		if err != nil {
			err = rt.Fail(context.WithoutCancel(ctx), inv.RequestID, err)
		} else {
			err = rt.Respond(context.WithoutCancel(ctx), inv.RequestID, res)
		}
		if err != nil {
			log.Error("answering the invocation", "error", err.Error())
		}
	}
}

// invoke is one claim-and-run cycle within an invocation's deadline.
func (c *LambdaCmd) invoke(inv lambdaruntime.Invocation, cfg *config.Config, log *slog.Logger, set runner.Set) (LambdaResult, error) {
	opts := oneshot.Options{Wait: c.Wait, DeadlineMessage: "Lambda deadline reached", Reserve: c.Reserve}
	if !inv.Deadline.IsZero() {
		// Lambda freezes the process at the deadline: delivery ends just before.
		opts.HardDeadline = inv.Deadline.Add(-500 * time.Millisecond)
		if time.Until(opts.HardDeadline.Add(-c.Reserve)) <= 0 {
			return LambdaResult{}, errors.New("invocation deadline leaves no time after the reserve; raise the function timeout or lower --reserve")
		}
	}
	out, err := oneshot.Run(context.Background(), cfg, opts, oneshot.Deps{Logger: log, Version: version, Runners: set})
	return LambdaResult{Claimed: out.Claimed, JobID: out.JobID, StepName: out.StepName,
		ExitCode: out.ExitCode, Error: out.Error, Delivered: out.Delivered}, err
}
