package dockertest

import "context"

func startPodman(ctx context.Context, opts Options) (*Engine, error) {
	return nil, &UnavailableError{Reason: "podman mode is not implemented yet"}
}
