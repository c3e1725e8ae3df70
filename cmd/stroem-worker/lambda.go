package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/config"
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
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") == "" {
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
	handler := func(ictx context.Context, _ json.RawMessage) (LambdaResult, error) {
		opts := oneshot.Options{Wait: c.Wait, DeadlineMessage: "Lambda deadline reached", Reserve: c.Reserve}
		if d, ok := ictx.Deadline(); ok {
			// Lambda freezes the process at d: delivery ends just before.
			opts.HardDeadline = d.Add(-500 * time.Millisecond)
			if time.Until(opts.HardDeadline.Add(-c.Reserve)) <= 0 {
				return LambdaResult{}, errors.New("invocation deadline leaves no time after the reserve; raise the function timeout or lower --reserve")
			}
		}
		// Everything is delivered before the handler returns: once it
		// does, Lambda may freeze the process.
		out, err := oneshot.Run(context.WithoutCancel(ictx), cfg, opts, oneshot.Deps{Logger: log, Version: version, Runners: set})
		res := LambdaResult{Claimed: out.Claimed, JobID: out.JobID, StepName: out.StepName,
			ExitCode: out.ExitCode, Error: out.Error, Delivered: out.Delivered}
		return res, err
	}
	lambda.StartWithOptions(handler, lambda.WithContext(ctx))
	return nil
}
