package runner

import (
	"context"
	"encoding/json"
	"fmt"
)

// Kind names a runner.
type Kind string

const (
	Local      Kind = "local"
	Docker     Kind = "docker"
	Kubernetes Kind = "kubernetes"
)

// Select picks the runner for a claimed step by its action type and
// runner field (contract §1.3): script steps run locally unless their
// runner says docker or pod; docker and pod actions run as containers
// and pods whatever their runner field says.
func Select(actionType, runnerName string) (Kind, error) {
	if runnerName == "" {
		runnerName = "local"
	}
	switch {
	case actionType == "script" && runnerName == "local":
		return Local, nil
	case actionType == "script" && runnerName == "docker", actionType == "docker":
		return Docker, nil
	case actionType == "script" && runnerName == "pod", actionType == "pod":
		return Kubernetes, nil
	}
	return "", Errorf("Failed to select runner: Unknown action type / runner combination: %s/%s", actionType, runnerName)
}

// NotConfigured is the error for a step whose runner this worker does not
// have, worded as the reference worker words it.
func NotConfigured(k Kind) error {
	switch k {
	case Docker:
		return Errorf("Failed to select runner: Docker runner not configured. Enable the 'docker' feature and configure docker settings in worker config.")
	case Kubernetes:
		return Errorf("Failed to select runner: Kubernetes runner not configured. Enable the 'kubernetes' feature and configure kubernetes settings in worker config.")
	}
	return Errorf("Failed to select runner: %s runner not configured", k)
}

// Set is the runners a worker has, by kind.
type Set map[Kind]Runner

// For returns the runner for a step, or the reference worker's error.
func (s Set) For(actionType, runnerName string) (Runner, error) {
	k, err := Select(actionType, runnerName)
	if err != nil {
		return nil, err
	}
	r, ok := s[k]
	if !ok {
		return nil, NotConfigured(k)
	}
	return r, nil
}

// Kill stops what a dead worker's step left running, with the runner the
// handle's "kind" names.
func (s Set) Kill(ctx context.Context, handle json.RawMessage) error {
	var h struct {
		Kind Kind `json:"kind"`
	}
	if err := json.Unmarshal(handle, &h); err != nil {
		return fmt.Errorf("decoding step handle: %w", err)
	}
	r, ok := s[h.Kind]
	if !ok {
		return fmt.Errorf("a step handle of kind %q, which this worker does not run", h.Kind)
	}
	return r.Kill(ctx, handle)
}
