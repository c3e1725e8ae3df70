package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
)

// runners builds the runners a worker has: local always, the Docker
// runner when capabilities has docker, the Kubernetes runner when it has
// kubernetes. Building costs no I/O beyond the worker home's id: the
// engine is first asked by checkRunners, or by a runner's first step, and
// the Kubernetes client is made on the first pod step. An engine address
// that cannot work (docker.host ssh://, a bad TLS setup) is a
// configuration error (exit 2).
func runners(cfg *config.Config, log *slog.Logger) (runner.Set, error) {
	set := runner.Set{runner.Local: &local.Runner{Log: log}}
	if cfg.HasCapability("docker") {
		home, err := homeID(cfg.WorkspaceDir)
		if err != nil {
			return nil, err
		}
		host := docker.ResolveHost(cfg.DockerHost, os.Getenv)
		client, err := docker.NewClient(host, docker.ClientOptions{ConnectTimeout: cfg.ConnectTimeout()})
		if err != nil {
			return nil, &usageError{fmt.Errorf("capability docker: %w", err)}
		}
		set[runner.Docker] = &docker.Runner{
			Client: client, RunnerImage: cfg.RunnerImage, PullPolicy: cfg.DockerPullPolicy,
			Network: cfg.DockerNetwork, Home: home, Log: log,
		}
	}
	if cfg.HasCapability("kubernetes") {
		home, err := homeID(cfg.WorkspaceDir)
		if err != nil {
			return nil, err
		}
		r, err := kubernetesRunner(cfg, home, log)
		if err != nil {
			return nil, err
		}
		set[runner.Kubernetes] = r
	}
	return set, nil
}

// checkRunners is done by a process that takes work on its own
// (supervise, a standalone claim-and-run, lambda) before it claims: the
// Docker engine must answer. One that does not is an error that exits 69
// (retry later), not a warning: a worker advertising docker would claim
// Docker steps only to fail them, while a worker that exits is restarted
// (systemd, Kubernetes) and finds the engine once it is up. An engine too
// old for the runner exits 2.
func checkRunners(ctx context.Context, cfg *config.Config, set runner.Set, log *slog.Logger) error {
	r, ok := set[runner.Docker].(*docker.Runner)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout())
	defer cancel()
	v, err := r.Client.ServerVersion(ctx)
	switch {
	case errors.Is(err, docker.ErrTooOld):
		return &usageError{fmt.Errorf("capability docker: %w", err)}
	case err != nil:
		return &engineError{fmt.Errorf("capability docker: %w", err)}
	}
	host := r.Client.Host()
	log.Info("docker runner", "engine", v.Version, "api", r.Client.APIVersion(), "host", host.Addr, "from", host.From)
	return nil
}

// engineError is a Docker engine that did not answer at start. It exits
// 69, as a server that does not answer does: retry later.
type engineError struct{ err error }

func (e *engineError) Error() string        { return e.err.Error() }
func (e *engineError) Unwrap() error        { return e.err }
func (e *engineError) Is(target error) bool { return target == api.ErrUnreachable }

// homeID names this worker home on what its runners create (pods,
// containers), so that a later run of the same home, and only of it,
// sweeps what a dead one left: a random id kept in workspace_dir, so two
// workers with homes at the same path on different machines (replicas
// with an emptyDir) never take each other's pods for leftovers.
func homeID(workspaceDir string) (string, error) {
	path := filepath.Join(workspaceDir, "home-id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading the worker home's id: %w", err)
	}
	if err := os.MkdirAll(workspaceDir, 0o700); err != nil {
		return "", fmt.Errorf("creating workspace_dir: %w", err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return homeID(workspaceDir) // another process was first
	}
	if err != nil {
		return "", fmt.Errorf("writing the worker home's id: %w", err)
	}
	_, werr := f.WriteString(id + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return "", fmt.Errorf("writing the worker home's id: %w", err)
	}
	return id, nil
}
