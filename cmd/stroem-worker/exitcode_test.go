package main

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
)

func TestExitCode(t *testing.T) {
	t.Parallel()
	status := func(code int) error {
		return fmt.Errorf("registering worker: %w", &api.StatusError{Method: "POST", Path: "/worker/register", Status: code})
	}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, ExitOK},
		{"config", fmt.Errorf("loading: %w", config.ErrInvalid), ExitUsage},
		{"server refuses as configured", status(http.StatusBadRequest), ExitUsage},
		{"token rejected", status(http.StatusUnauthorized), ExitTokenRejected},
		{"server failing", status(http.StatusServiceUnavailable), ExitUnavailable},
		{"unreachable", &api.TransportError{Method: "POST", Path: "/x", Err: errors.New("refused")}, ExitUnavailable},
		{"2xx with a body that is not the API's (a proxy page)", fmt.Errorf("POST /worker/jobs/claim: %w: invalid character", api.ErrBadResponse), ExitUnavailable},
		{"not delivered, refused", fmt.Errorf("%w: %w", oneshot.ErrNotDelivered, status(http.StatusBadRequest)), ExitNotDelivered},
		{"chosen code", &exitError{code: 3}, 3},
		{"bug", errors.New("boom"), ExitInternal},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%s: %v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}
