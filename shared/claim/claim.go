package claim

import (
	"context"
	"errors"
	"net/http"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
)

// Verdict is what one claim's answer means for the claimer.
type Verdict int

const (
	// Work: a step came; run it (a malformed one too: running it reports
	// it failed instead of stranding it).
	Work Verdict = iota
	// Idle: no work, or the server failed the step it picked (422, a
	// template that would not render). Poll again.
	Idle
	// Retry: the request failed without committing anything (it never left,
	// or the server refused it for now). Poll again with the same id.
	Retry
	// Reregister: 500; the worker row may have been removed (retention),
	// and the server answers heartbeats with 200 but claims with 500.
	Reregister
	// Abandon: the request may have reached the server and no usable
	// answer came back: the claim may be committed under this id.
	Abandon
	// Fatal: the token was rejected (401) or the request is refused as
	// configured (another 4xx): stop.
	Fatal
)

var names = map[Verdict]string{Work: "work", Idle: "idle", Retry: "retry", Reregister: "reregister", Abandon: "abandon", Fatal: "fatal"}

func (v Verdict) String() string { return names[v] }

// Request is the claim request of a worker with cfg's capabilities and tags.
func Request(cfg *config.Config, workerID string) api.ClaimRequest {
	return api.ClaimRequest{WorkerID: workerID, Capabilities: cfg.Capabilities, Tags: cfg.Tags, Exclusive: cfg.Exclusive}
}

// Registration is the register request of a worker with cfg.
func Registration(cfg *config.Config, version string) api.RegisterRequest {
	return api.RegisterRequest{Name: cfg.WorkerName, Capabilities: cfg.Capabilities, Tags: cfg.Tags, Exclusive: cfg.Exclusive, Version: version}
}

// Once sends one claim, with no retry of its own: ctx should not be one a
// stop signal cancels (a claim cut mid-flight is a lost answer), so pass
// context.WithoutCancel of it; the request timeout bounds it.
func Once(ctx context.Context, client *api.Client, cfg *config.Config, workerID string) (*api.Step, error) {
	return client.WithRetry(api.Retry{Attempts: 1}).Claim(ctx, Request(cfg, workerID))
}

// Judge says what a claim's answer (step and error as Once returns them)
// means.
func Judge(step *api.Step, err error) Verdict {
	var se *api.StatusError
	switch {
	case step != nil:
		return Work
	case err == nil, errors.Is(err, api.ErrClaimRejected):
		return Idle
	case errors.Is(err, api.ErrUnauthorized):
		return Fatal
	case errors.As(err, &se):
		switch {
		case se.Status == http.StatusInternalServerError:
			return Reregister
		case se.Status == http.StatusBadGateway || se.Status == http.StatusGatewayTimeout:
			// A proxy passed the request on and lost the answer.
			return Abandon
		case se.Transient():
			return Retry
		}
		return Fatal
	case api.IsUnsent(err):
		return Retry
	case errors.Is(err, context.Canceled):
		return Idle
	}
	// A timeout, a reset, a 2xx whose body did not decode: the server may
	// have committed the claim.
	return Abandon
}
