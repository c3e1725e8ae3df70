package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/stroem-worker/stroem-worker/supervisor"
)

// SuperviseCmd is `stroem-worker supervise`, also the default command.
type SuperviseCmd struct {
	Listen           string `help:"Serve /healthz, /readyz and /metrics on this address (overrides listen), e.g. 127.0.0.1:9090." placeholder:"ADDR"`
	OnSignal         string `name:"on-signal" help:"What the first SIGTERM/SIGINT does: drain (stop claiming, let steps finish until drain_timeout_secs) or cancel (stop steps now). Overrides on_signal." placeholder:"drain|cancel"`
	DrainTimeoutSecs string `name:"drain-timeout-secs" help:"Override drain_timeout_secs." placeholder:"SECS"`
}

// Run supervises until stopped.
func (c *SuperviseCmd) Run(ctx context.Context, g *Globals) error {
	extra := map[string]string{"listen": c.Listen, "on_signal": c.OnSignal, "drain_timeout_secs": c.DrainTimeoutSecs}
	cfg, err := g.load(extra)
	if err != nil {
		return err
	}
	// The supervisor mostly waits (claims, heartbeats, its children's
	// events), and every step runs in a child process of its own that keeps
	// all cores. One P keeps its wakeups on one thread: about 20% less idle
	// CPU at poll 1 s (scripts/bench -only idle). GOMAXPROCS set in the
	// environment still wins, and children inherit the environment, not this.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	log := g.logger(cfg)
	set, err := runners(cfg, log)
	if err != nil {
		return err
	}
	if err := checkRunners(ctx, cfg, set, log); err != nil {
		return err
	}
	// main's context ends on the first signal; the supervisor also needs
	// the second one, to turn a drain into a cancel.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	return supervisor.Run(ctx, cfg, supervisor.Deps{
		Logger:      log,
		Runners:     set,
		ChildStderr: os.Stderr,
		Signals:     sigs,
		Version:     version,
	})
}
