// Package api is the typed HTTP client for the Strøm server's worker API
// (/worker/...), and the wire types it sends and receives.
//
// The wire format follows ../shared/stroem-worker-contract.md (§1-§5, §8):
// Bearer auth on every call, JSON bodies with Content-Type application/json,
// lists always sent as [] (the server rejects null), path segments escaped.
//
// It is not a place for step logic: retries of transient failures live here,
// but what a failed call means for a step is decided by the caller through
// the typed errors (*StatusError, ErrUnauthorized, ErrUnreachable).
package api
