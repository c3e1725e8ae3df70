package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	kube "github.com/stroem-worker/stroem-worker/shared/runner/kubernetes"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
)

// runners builds the runners a worker has: local always, the Kubernetes
// runner when capabilities has kubernetes. Building costs no I/O beyond
// the worker home's id: clients are made on a runner's first step.
func runners(cfg *config.Config, log *slog.Logger) (runner.Set, error) {
	set := runner.Set{runner.Local: &local.Runner{Log: log}}
	if cfg.HasCapability("kubernetes") {
		home, err := homeID(cfg.WorkspaceDir)
		if err != nil {
			return nil, err
		}
		set[runner.Kubernetes] = &kube.Runner{
			Namespace: cfg.KubeNamespace, InitImage: cfg.KubeInitImage, StartupConfigMap: cfg.KubeStartupConfigMap,
			RunnerImage: cfg.RunnerImage, ServerURL: cfg.ServerURL, WorkerToken: cfg.WorkerToken,
			Home: home, Log: log,
		}
	}
	return set, nil
}

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
