//go:build !linux

package dockertest

import (
	"context"
	"runtime"
)

func startDockerd(context.Context, Options) (*Engine, error) {
	return nil, &UnavailableError{Reason: "dockerd test engines need Linux, not " + runtime.GOOS}
}

func startPodman(context.Context, Options) (*Engine, error) {
	return nil, &UnavailableError{Reason: "podman test engines need Linux, not " + runtime.GOOS}
}

// Stop does nothing: no engine can be started on this system.
func (e *Engine) Stop(context.Context) error { return nil }
