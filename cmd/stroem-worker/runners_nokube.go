//go:build nokubernetes

package main

import (
	"errors"
	"log/slog"

	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/runner"
)

// kubernetesRunner refuses: this binary was built without the Kubernetes
// runner (-tags nokubernetes).
func kubernetesRunner(*config.Config, string, *slog.Logger) (runner.Runner, error) {
	return nil, &usageError{errors.New("capability kubernetes: this binary was built without the Kubernetes runner (-tags nokubernetes); use a build without that tag, or remove kubernetes from capabilities")}
}
