package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
)

// runners builds the runners the config asks for: local always, Docker
// when capabilities has docker. A process that takes work on its own
// (supervise, a standalone claim-and-run, lambda: start) first checks
// that the engine answers and removes the containers a dead worker of
// this home left; a supervisor's child leaves that to its supervisor.
//
// An engine that does not answer at start is an error that exits 69
// (retry later), not a warning: a worker advertising docker would claim
// Docker steps only to fail them, while a worker that exits is restarted
// (systemd, Kubernetes) and finds the engine once it is up. An address
// that cannot work (docker.host: ssh://, a bad TLS setup) or an engine
// too old exits 2.
func runners(ctx context.Context, cfg *config.Config, log *slog.Logger, start bool) (runner.Set, error) {
	set := runner.Set{runner.Local: &local.Runner{Log: log}}
	if !cfg.HasCapability("docker") {
		return set, nil
	}
	host := docker.ResolveHost(cfg.DockerHost, os.Getenv)
	client, err := docker.NewClient(host, docker.ClientOptions{ConnectTimeout: cfg.ConnectTimeout()})
	if err != nil {
		return nil, &usageError{err}
	}
	r := &docker.Runner{
		Client:      client,
		Log:         log,
		RunnerImage: cfg.RunnerImage,
		PullPolicy:  cfg.DockerPullPolicy,
		Network:     cfg.DockerNetwork,
		Home:        workerHome(cfg.WorkspaceDir),
	}
	set[runner.Docker] = r
	if !start {
		return set, nil
	}
	vctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout())
	defer cancel()
	v, err := client.ServerVersion(vctx)
	switch {
	case errors.Is(err, docker.ErrTooOld):
		return nil, &usageError{fmt.Errorf("capability docker: %w", err)}
	case err != nil:
		return nil, &engineError{fmt.Errorf("capability docker: %w", err)}
	}
	log.Info("docker runner", "engine", v.Version, "api", client.APIVersion(), "host", host.Addr, "from", host.From)
	d := &delivery.Deliverer{Root: delivery.Root(cfg.WorkspaceDir)}
	n, err := r.Sweep(vctx, func(key string) (func(), error) {
		l, err := d.Lock(key)
		if err != nil {
			return nil, err
		}
		return l.Unlock, nil
	})
	if err != nil {
		log.Warn("removing containers a dead worker left", "error", err.Error())
	}
	if n > 0 {
		log.Warn("removed containers a dead worker left", "count", n)
	}
	return set, nil
}

// workerHome names this worker's home on its containers: the host and
// workspace_dir, which together hold its spools.
func workerHome(workspaceDir string) string {
	host, _ := os.Hostname()
	if abs, err := filepath.Abs(workspaceDir); err == nil {
		workspaceDir = abs
	}
	sum := sha256.Sum256([]byte(host + "\x00" + workspaceDir))
	return hex.EncodeToString(sum[:8])
}

// engineError is a Docker engine that did not answer at start. It exits
// 69, as a server that does not answer does: retry later.
type engineError struct{ err error }

func (e *engineError) Error() string        { return e.err.Error() }
func (e *engineError) Unwrap() error        { return e.err }
func (e *engineError) Is(target error) bool { return target == api.ErrUnreachable }
