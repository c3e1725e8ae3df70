//go:build nokubernetes

package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/config"
)

// TestBuiltWithoutKubernetes: a binary built with -tags nokubernetes
// refuses capability kubernetes with a configuration error (exit 2) that
// says why, and runs the others.
func TestBuiltWithoutKubernetes(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{Capabilities: []string{"script", "kubernetes"}, WorkspaceDir: t.TempDir()}
	_, err := runners(cfg, nil)
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "built without the Kubernetes runner") || exitCode(err) != ExitUsage {
		t.Errorf("runners(kubernetes) = %v (exit %d), want a usage error naming the build tag", err, exitCode(err))
	}
	cfg.Capabilities = []string{"script"}
	if set, err := runners(cfg, nil); err != nil || len(set) != 1 {
		t.Errorf("runners(script) = %v, %v; want the local runner", set, err)
	}
}
